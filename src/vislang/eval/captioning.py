"""Image captioning on COCO-format references: the model writes a caption for each image and the
captions are scored as the COCO caption evaluation scores them (BLEU-1..4, ROUGE-L, CIDEr-D, and
METEOR and SPICE where Java and their files are present; see :mod:`vislang.eval.caption_metrics`).

Only generative objectives (``cap``, ``cappa``, ``coca``) write captions; any other is a
:class:`ConfigError` when the task runs. Metrics are ``captioning/<metric>``, or
``captioning_<name>/<metric>`` with a ``name``. A metric that could not be computed is left out
of the returned numbers (a 0 would read as a result) and its reason kept in the evaluator's
``missing``. Under torchrun each rank writes the captions of its share of the images; every rank
scores all of them (the same numbers everywhere).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from tqdm import tqdm

from vislang.data.benchmark.coco_captions import CocoCaptions, read_coco_captions
from vislang.errors import ConfigError
from vislang.eval.caption_metrics import score_captions
from vislang.eval.encode import FeatureCache, autocast, device_of, image_batches, sharded
from vislang.eval.tasks import EvalContext, Evaluator, TaskConfig
from vislang.generation import GenerationConfig, generate
from vislang.objectives import Objective


class CaptioningTask(TaskConfig):
    """Captions generated for the images of a COCO-format caption file, scored against its
    references: ``captioning[_<name>]/BLEU-4``, ``CIDEr``, ..."""

    type: Literal["captioning"] = Field("captioning", description="the task type")
    references: str = Field(
        description="COCO-format caption file (captions_val2014.json form: 'images' with id and file_name, "
        "'annotations' with image_id and caption)"
    )
    images: str = Field(description="folder the file's file_name entries are relative to")
    n: int | None = Field(None, ge=1, description="caption only the first n captioned images (default: all)")
    name: str | None = Field(
        None, min_length=1, pattern=r"^[^/\s]+$", description="metric prefix captioning_<name> (default: captioning)"
    )
    method: Literal["greedy", "beam"] = Field("greedy", description="decoding: greedy or beam search")
    beam_size: int = Field(4, ge=1, description="beams when method is beam")
    max_length: int | None = Field(
        None, ge=2, description="caption tokens including start and end (default: the decoder's context length)"
    )
    tokenize: bool = Field(
        True, description="tokenise references and captions as pycocoevalcap's PTBTokenizer does (COCO's protocol)"
    )
    java: bool = Field(True, description="also METEOR and SPICE, which run Java programs, where Java is installed")

    path_fields: ClassVar[tuple[str, ...]] = ("references", "images")

    def metric_prefix(self) -> str:
        return f"captioning_{self.name}" if self.name else "captioning"

    def generation(self) -> GenerationConfig:
        return GenerationConfig(method=self.method, beam_size=self.beam_size, max_length=self.max_length)

    def build(self, context: EvalContext) -> list[Evaluator]:
        data = read_coco_captions(self.references, self.images, self.n)
        return [CaptioningEvaluator(self.metric_prefix(), data, context, self.generation(), self.tokenize, self.java)]


def captioner_of(objective: Objective, task: str) -> torch.nn.Module:
    """The objective's caption-writing model (it has ``image_context`` and a ``decoder``)."""
    model = objective.captioner()
    if model is None:
        raise ConfigError(
            f"{task}: captioning needs a generative objective (cap, cappa or coca); "
            f"{type(objective).__name__} does not write captions"
        )
    return model


class CaptioningEvaluator:
    """Writes a caption per image and scores them; keeps the last captions and, in ``missing``,
    why a metric was not computed."""

    main = "CIDEr"  # the metric a suite summary shows

    def __init__(
        self,
        name: str,
        data: CocoCaptions,
        context: EvalContext,
        settings: GenerationConfig | None = None,
        tokenize: bool = True,
        java: bool = True,
    ) -> None:
        tokenizer = context.tokenizer
        if getattr(tokenizer, "sot_id", None) is None or not hasattr(tokenizer, "decode"):
            raise ConfigError(f"{name}: captioning needs a tokenizer with a start token and decode()")
        self.name, self.data, self.tokenize, self.java = name, data, tokenize, java
        self.settings = settings or GenerationConfig()
        self.tokenizer, self.pipeline = tokenizer, context.pipeline()
        self.captions: list[str] = []
        self.missing: dict[str, str] = {}

    def _tokens(self, objective: Objective, model: torch.nn.Module) -> torch.Tensor:
        """Generated token rows of every image, in order (each rank writes its share)."""
        device, ids = device_of(objective), (self.tokenizer.sot_id, self.tokenizer.eot_id, self.tokenizer.pad_id)

        def write(start: int, stop: int) -> torch.Tensor:
            rows = []
            bar = tqdm(total=stop - start, desc=f"caption {self.name}", disable=not self.pipeline.progress, leave=False)
            for batch in image_batches(self.data.images, self.pipeline, start, stop):
                with autocast(objective, self.pipeline.precision):
                    rows.append(generate(model, batch.to(device), *ids, self.settings))
                bar.update(len(batch))
            bar.close()
            return torch.cat(rows)

        return sharded(len(self.data.images), write)

    @torch.no_grad()
    def __call__(self, objective: Objective, features: FeatureCache | None = None) -> dict[str, float]:
        tokens = self._tokens(objective, captioner_of(objective, self.name)).cpu()
        self.captions = [self.tokenizer.decode(row.tolist()) for row in tokens]
        references = dict(zip(self.data.image_ids, self.data.captions))
        scores = score_captions(references, dict(zip(self.data.image_ids, self.captions)), self.tokenize, self.java)
        self.missing = dict(scores.missing)
        return {f"{self.name}/{metric}": value for metric, value in scores.items() if value is not None}

    def details(self) -> dict[str, Any]:
        return {"kind": "captioning", "missing": self.missing, "captions": self.captions}
