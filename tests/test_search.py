"""`vislang search` and the SearchIndex behind it: results equal a numpy ranking of the model's
own embeddings, every direction, zero-shot labels equal a hand softmax, thumbnails by id only,
and bad queries are one line."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from index_helpers import build_test_index, shapes_collection
from vislang.errors import DataError
from vislang.search.searcher import SearchIndex, image_from_bytes


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def index(tmp_path_factory, tiny_run):
    images, captions = shapes_collection()
    root = tmp_path_factory.mktemp("index")
    image_emb, text_emb = build_test_index(root, tiny_run, images, captions, part_size=5)
    return root, tiny_run, images, captions, image_emb, text_emb


def ranks_as_numpy(hits, rows: np.ndarray, query: np.ndarray, k: int, keep: np.ndarray | None = None) -> bool:
    """The hits are a top-k of a numpy scan: their scores are the k best, each the cosine of its
    own row, and no row is returned twice (ids compared through scores: a barely trained model
    has near-ties that float order may break either way)."""
    scores = rows @ query
    ids = np.arange(len(rows)) if keep is None else np.flatnonzero(keep)
    best = np.sort(scores[ids])[::-1][:k]
    got = np.array([h.score for h in hits])
    own = np.array([scores[h.id] for h in hits])
    unique = len({h.id for h in hits}) == len(hits) == k and all(h.id in set(ids.tolist()) for h in hits)
    return unique and np.allclose(got, best, atol=1e-5) and np.allclose(own, got, atol=1e-5)


def test_every_direction_ranks_as_numpy_does(index):
    root, _, images, captions, image_emb, text_emb = index
    searcher = SearchIndex(root)
    assert len(searcher) == len(images) and searcher.has_captions
    query = searcher.embed_texts(["a red circle"])[0]
    hits = searcher.text_to_images("a red circle", k=6)
    assert ranks_as_numpy(hits, image_emb, query, 6)
    assert hits[0].key == f"img-{hits[0].id}.png" and hits[0].caption == captions[hits[0].id]
    image_query = searcher.embed_image(images[7])
    assert ranks_as_numpy(searcher.image_to_images(images[7], 4), image_emb, image_query, 4)
    captioned = np.array([c is not None for c in captions])
    to_text = searcher.image_to_texts(images[7], 4)
    assert ranks_as_numpy(to_text, text_emb, image_query, 4, captioned)
    assert all(h.caption is not None for h in to_text)


def test_zero_shot_labels_are_a_softmax_of_the_scaled_cosines(index):
    root, run, images, *_ = index
    searcher = SearchIndex(root)
    names = ["red circle", "blue square", "green circle"]
    got = dict(searcher.labels(images[0], names))
    model, tokenizer, preprocess = searcher.model
    with torch.inference_mode():
        text = model.encode_text(tokenizer([f"a photo of a {n}." for n in names]))
        image = model.encode_image(preprocess([images[0]]))[0]
        expected = torch.softmax(model.scale() * (text @ image), dim=0).tolist()
    assert [got[n] for n in names] == pytest.approx(expected, abs=1e-5)
    assert sum(got.values()) == pytest.approx(1.0)


def test_thumbnails_are_looked_up_by_id_in_the_index_only(index):
    root, _, images, *_ = index
    searcher = SearchIndex(root)
    for id_ in (0, 6, len(images) - 1):
        thumb = Image.open(io.BytesIO(searcher.thumbnail(id_)))
        assert thumb.size == images[id_].size
        assert np.abs(np.asarray(thumb, float) - np.asarray(images[id_], float)).mean() < 8  # JPEG of that image
    assert searcher.thumbnail(len(images)) is None and searcher.thumbnail(-1) is None


def test_the_command_line_prints_a_table_or_json(index):
    root, _, images, *_ = index
    result = cli("search", str(root), "a blue square", "-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3] and [r["id"] for r in rows] == [
        h.id for h in SearchIndex(root).text_to_images("a blue square", 3)
    ]
    query = root.parent / "query.png"
    images[3].save(query)
    table = cli("search", str(root), "--image", str(query), "--to", "text", "-k", "2")
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (("nowhere", "a cat"), "not a vislang index"),
        (("INDEX",), "give a TEXT or --image"),
        (("INDEX", "a cat", "--to", "text"), "--to text searches captions with an image"),
        (("INDEX", "--image", "missing.png"), "cannot read query image"),
        (("INDEX", "--image", "NOTIMAGE"), "not an image of a supported format"),
    ],
)
def test_bad_queries_are_one_line(index, tmp_path, args, message):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is text, not a PNG")
    args = [str(index[0]) if a == "INDEX" else str(bad) if a == "NOTIMAGE" else a for a in args]
    result = cli("search", *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_uploads_that_are_not_usable_images_are_refused(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    png = buffer.getvalue()
    assert image_from_bytes(png, 10_000).size == (64, 64)
    for data, limit, message in [(b"GIF89a nonsense", 10_000, "not a"),
                                 (png[: len(png) // 2], 10_000, "not a readable"),
                                 (png, 1000, "over the 1000-pixel limit")]:  # fmt: skip
        with pytest.raises(DataError, match=message):
            image_from_bytes(data, limit)
