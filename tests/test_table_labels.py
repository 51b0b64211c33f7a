"""A table source with a label column (GIST's pairs): batches carry each row's label, FLYP's
objective trains on it, and what cannot work is refused in one line."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import TINY
from vislang.data import build_batches, build_sources
from vislang.errors import ConfigError, DataError
from vislang.experiment import build_config, build_objective


class CaptionIndex:
    """Writes each caption as its row number in the table, so a batch's rows read back exactly."""

    def __init__(self, captions: list[str]) -> None:
        self.captions = captions

    def __call__(self, captions) -> torch.Tensor:
        return torch.tensor([[self.captions.index(c)] for c in captions])


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (value, 255 - value, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def pairs(tmp_path):
    labels = [i % 3 for i in range(12)]
    captions = [f"caption number {i} of class {y}" for i, y in enumerate(labels)]
    table = pa.table({"image": [_png(10 * i) for i in range(12)], "caption": captions, "label": labels})
    path = tmp_path / "pairs.parquet"
    pq.write_table(table, path)
    return path, captions, labels


def _config(path, *overrides, **fields):
    raw = {"data": {"sources": [{"kind": "table", "path": str(path), "label_column": "label", **fields}]}}
    return build_config(raw, TINY + ["eval.tasks=[]", *overrides])


def test_each_row_arrives_with_its_own_label_and_flyp_trains_on_them(pairs):
    path, captions, labels = pairs
    cfg = _config(path, "objective=flyp")
    assert cfg.data.carries_labels() and not cfg.data.labelled()
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    batches = build_batches(cfg.data, cfg.model.vision, 6, cfg.train.seed, CaptionIndex(captions), sources)
    seen = []
    for b in range(4):
        batch = batches[b]
        rows = batch["text"][:, 0].tolist()
        assert batch["label"].tolist() == [labels[r] for r in rows]
        seen += rows
    assert sorted(seen[:12]) == list(range(12))  # an epoch visits every row once
    objective = build_objective(cfg, 16, 0)
    batch = batches[0]
    batch["text"] = torch.randint(1, 16, (6, cfg.model.text.context_length))
    loss = objective.loss(batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()


def test_without_the_column_batches_carry_no_label(pairs):
    path, captions, _ = pairs
    cfg = build_config({"data": {"sources": [{"kind": "table", "path": str(path)}]}}, TINY + ["eval.tasks=[]"])
    assert not cfg.data.carries_labels()
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    batch = build_batches(cfg.data, cfg.model.vision, 6, cfg.train.seed, CaptionIndex(captions), sources)[0]
    assert "label" not in batch


@pytest.mark.parametrize(
    "sources, overrides, message",
    [
        ([{"kind": "table", "path": "p.parquet"}], ["objective=flyp"], "or tables with a label_column"),
        ([{"kind": "world", "label_column": "label"}], [], "label_column is read from tables only"),
        (
            [{"kind": "table", "path": "p.parquet", "label_column": "label"}, {"kind": "table", "path": "q.parquet"}],
            [],
            "give each source a label_column",
        ),
    ],
)
def test_what_cannot_work_is_refused_in_one_line(sources, overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        build_config({"data": {"sources": sources}}, TINY + ["eval.tasks=[]", *overrides])
    assert "\n" not in str(refused.value)


def test_a_classifier_needs_a_class_list_which_a_label_column_does_not_give(pairs):
    cfg = _config(pairs[0], "objective=classifier")
    with pytest.raises(ConfigError, match="needs the class list of a labelled source"):
        build_objective(cfg, 16, 0)


@pytest.mark.parametrize("column, message", [(["cat", "dog"], "must hold integer class labels"), ([1, -2], "negative")])
def test_a_bad_label_column_is_one_line_naming_it(tmp_path, column, message):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"image": [_png(1), _png(2)], "caption": ["a", "b"], "label": column}), path)
    cfg = _config(path)
    with pytest.raises(DataError, match=f"'label' {message}" if "integer" in message else message) as refused:
        build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    assert str(path) in str(refused.value)


def test_a_csv_label_column_is_read_as_integers(tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(image)
    path = tmp_path / "pairs.csv"
    path.write_text("image,caption,label\na.png,first,2\na.png,second,0\n")
    cfg = _config(path)
    source = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)["table"]
    assert np.array_equal(np.sort(source.labels), [0, 2])
