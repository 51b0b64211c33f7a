"""Cross-entropy fine-tuning with a linear head over the image embedding, initialised so that
training starts from what the pretrained model already knows.

- ``head_init: zeroshot`` (WiSE-FT's and FLYP's baseline): the head's rows are the zero-shot
  classifier, each class's normalised mean prompt embedding times the logit scale, bias zero.
  Before the first step the head's predictions are exactly zero-shot classification.
- ``head_init: probe`` (LP-FT, Kumar et al. 2022): the head is a logistic-regression probe fitted
  on the frozen features of the training images first, so end-to-end training starts from a
  head that is already good and distorts the features less.
- ``head_init: zeros``: a head with no knowledge (the usual fine-tuning baseline).

``train_towers: false`` trains the head alone (a linear probe by gradient descent). The text
tower takes no part in the loss and stays frozen: zero-shot evaluation of the fine-tuned model
pairs the original text tower with the moved image tower, which is what "zero-shot accuracy
after fine-tuning" means.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from vislang.classes import ClassTask
from vislang.config import ModelConfig, ParamRule, TrainConfig
from vislang.models.two_tower import TwoTower
from vislang.objectives.base import StartContext
from vislang.objectives.contrastive import EmbeddingObjective, TwoTowerConfig
from vislang.objectives.towers import build_two_tower

PROMPT_CHUNK = 512  # prompts encoded at a time for the zero-shot head


class ClassifierConfig(TwoTowerConfig):
    """A linear head on the image tower, trained with cross-entropy on labelled images."""

    kind: Literal["classifier"] = Field("classifier", description="the objective")
    head_init: Literal["zeroshot", "probe", "zeros"] = Field(
        "zeroshot",
        description="zeroshot: the zero-shot classifier (prompt prototypes x logit scale); probe: a logistic "
        "probe fitted on the starting features first (LP-FT); zeros: an uninformed head",
    )
    train_towers: bool = Field(True, description="false: only the head trains (the image tower stays frozen)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False, description="of the cross-entropy")
    probe_samples: int = Field(2000, ge=1, description="head_init probe: training images the probe is fitted on")
    probe_l2: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="head_init probe: the L2 penalty of the logistic regression"
    )

    needs_labels: ClassVar[bool] = True
    needs_classes: ClassVar[bool] = True
    accepts_hard_negatives: ClassVar[bool] = False
    accepts_cit: ClassVar[bool] = False

    def check(self, model: ModelConfig, train: TrainConfig) -> None:
        super().check(model, train)
        if self.hard_negative_images:
            raise ValueError("objective.hard_negative_images: a classifier has no caption pairs to mine")

    def param_rules(self) -> list[ParamRule]:
        tower = r"^model\." if not self.train_towers else r"^model\.(text\.|logit_)"
        return [ParamRule(match=tower, freeze=True)]

    def build(
        self, model: ModelConfig, vocab_size: int, pad_id: int, classes: ClassTask | None = None
    ) -> ClassifierObjective:
        assert classes is not None  # build_objective refuses an objective that needs classes without them
        two_tower = build_two_tower(model, vocab_size, pad_id)
        return ClassifierObjective(two_tower, classes, model.embed_dim, self)


class ClassifierObjective(EmbeddingObjective):
    set_by_start = ("head.",)

    def __init__(self, model: TwoTower, classes: ClassTask, embed_dim: int, config: ClassifierConfig) -> None:
        super().__init__(model, None)
        self.classes, self.config = classes, config
        self.head = nn.Linear(embed_dim, len(classes))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.classify(self.model.encode_image(batch["image"]))
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.config.label_smoothing)
        return {"loss": loss, "ce": loss.detach()}

    def classify(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.head(image_features.to(self.head.weight.dtype))

    @torch.no_grad()
    def start(self, context: StartContext) -> list[str]:
        init = self.config.head_init
        self.head.bias.zero_()  # whatever train.init_from may have loaded into the head
        if init == "zeroshot":
            self.head.weight.copy_(self.zero_shot_weights(context))
            return [f"classifier head: the zero-shot classifier of {len(self.classes)} classes"]
        if init == "probe":
            return [self.fit_probe(context)]
        self.head.weight.zero_()
        return [f"classifier head: zeros, {len(self.classes)} classes"]

    def zero_shot_weights(self, context: StartContext) -> torch.Tensor:
        """[C, D]: each class's normalised mean prompt embedding times the logit scale."""
        was_training = self.training
        self.eval()
        prompts = self.classes.prompts()
        tokens = context.tokenize([p for row in prompts for p in row]).to(context.device)
        # in chunks: an ImageNet-sized task has 1000 x 80 prompts
        encoded = torch.cat([self.text_features(chunk) for chunk in tokens.split(PROMPT_CHUNK)])
        features = encoded.reshape(len(prompts), len(prompts[0]), -1).transpose(0, 1)
        self.train(was_training)
        return self.ensemble_texts(features) * self.model.scale()

    def fit_probe(self, context: StartContext) -> str:
        """LP: a logistic regression on the frozen, normalised features of the training images."""
        if context.labelled_batches is None or context.fit_logistic is None:
            raise ValueError("head_init probe needs the labelled training images")
        was_training = self.training
        self.eval()
        features, labels = [], []
        for images, batch_labels in context.labelled_batches(self.config.probe_samples, 256):
            features.append(self.image_features(images.to(context.device)))
            labels.append(batch_labels)
        self.train(was_training)
        x, y = torch.cat(features), torch.cat(labels).to(context.device)
        weight, bias = context.fit_logistic(x, y, len(self.classes), self.config.probe_l2)
        self.head.weight.copy_(weight.to(self.head.weight.dtype))
        self.head.bias.copy_(bias.to(self.head.bias.dtype))
        accuracy = (self.classify(x).argmax(1) == y).float().mean().item()
        return f"classifier head: a logistic probe on {len(y)} training images (l2 {self.config.probe_l2}), train accuracy {accuracy:.3f}"
