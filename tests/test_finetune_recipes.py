"""The fine-tuning template for a user's ImageFolder: it describes the converted architecture
exactly, and it trains as written once its paths point at real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import export_untrained
from vislang.convert.open_clip import model_config_from_open_clip
from vislang.experiment import build_config, load_config
from vislang.objectives.contrastive import ClipConfig
from vislang.restore import architecture_difference
from vislang.train.loop import train

TEMPLATE = Path(__file__).parents[1] / "configs" / "templates" / "finetune_imagefolder.yaml"


def _open_clip_model(name: str) -> dict:
    """OpenCLIP's architecture ``name`` as a model section, with OpenAI's preprocessing (which
    comes with a checkpoint, not with the architecture)."""
    open_clip = pytest.importorskip("open_clip")
    model = model_config_from_open_clip(open_clip.get_model_config(name))
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    model["vision"] = {**model["vision"], "image_mean": list(mean), "image_std": list(std)}
    return model


def test_the_template_describes_open_clips_vit_b_32_exactly():
    template = load_config(TEMPLATE)
    assert architecture_difference(template, build_config({"model": _open_clip_model("ViT-B-32")})) is None
    quick = build_config({"model": _open_clip_model("ViT-B-32-quickgelu")})
    assert architecture_difference(template, quick)[0] == "model.text.act"  # init_from would refuse it


def _imagefolder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c, colour in enumerate([(220, 30, 30), (30, 30, 220)]):
            folder = root / split / ["red", "blue"][c]
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_the_template_trains_on_an_imagefolder_with_its_paths_filled_in(tmp_path):
    _imagefolder(tmp_path / "pets")
    tiny = ["model.preset=tiny", "train.precision=fp32", "data.num_workers=0", "train.threads=1"]
    start_cfg = build_config({"objective": ClipConfig().model_dump()}, tiny)
    start = export_untrained(start_cfg, ["a photo of a red", "a photo of a blue"] * 20, tmp_path / "start")
    dataset = f"{{format: imagefolder, path: {tmp_path / 'pets'}, templates: openai_imagenet}}"
    cfg = load_config(
        TEMPLATE,
        tiny
        + [
            f"train.init_from={start}",
            "train.steps=3",
            "train.batch_size=4",
            "train.warmup_steps=1",
            "train.eval_every=3",
            "train.checkpoint_every=3",
            f"data.sources=[{{kind: labelled, dataset: {dataset}}}]",
            f"eval.tasks=[{{type: zeroshot, dataset: {{format: imagefolder, path: {tmp_path / 'pets'}, split: val, "
            "templates: openai_imagenet}, role: id}]",
        ],
    )
    metrics = train(cfg, tmp_path / "run", quiet=True)
    assert 0.0 <= metrics["zeroshot/pets/top1"] <= 1.0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Fine-tuning cost" in report  # evaluated before the first step, as every fine-tune is
