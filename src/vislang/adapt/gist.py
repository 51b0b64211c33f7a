"""GIST (Lewis et al. 2024, "GIST: Generating Image-Specific Text for Fine-grained Object
Classification"): image-text pairs for fine-tuning, made from labelled images and a language
model's fine-grained class descriptions.

A class label alone says little about what an image shows; GIST makes one caption per image in
three stages, each writing a file the next reads:

1. :func:`describe_fine_grained`: ``fine_grained`` requests, several per class, for how the
   class looks and differs from similar classes; ``{class: [descriptions]}`` JSON.
2. :func:`match_images`: the CLIP model scores each labelled image against the descriptions of
   its own class only (the label is never contradicted) and keeps the ``top`` best; a parquet
   of image (PNG bytes), label, class, descriptions and scores (:func:`write_matched`).
3. :func:`summarize_matched`: the backend summarises each image's matched descriptions into one
   short caption (``summary`` requests); a parquet of image and caption, the table source
   ``data.sources: [{kind: table, path: ...}]`` trains on (:func:`write_pairs`).

Fine-tuning on the pairs is ``vislang train`` with ``train.init_from`` and FLYP's objective: the
pairs keep each image's label, and with ``label_column: label`` the loss leaves same-class
images out of each other's negatives, as FLYP does for class prompts
(docs/language_adaptation.md).
Every generation goes through the backend's cache, so a rerun writes byte-identical files.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from vislang.adapt.labo import Model, TaskData
from vislang.errors import DataError, first_line
from vislang.llm.base import Backend, LLMError, Request, article
from vislang.llm.cupl import clean_descriptions

GIST_QUESTIONS: tuple[str, ...] = (
    "Describe the fine-grained visual features that distinguish {article} {c} from similar objects.",
    "How does {article} {c} differ in appearance from the classes most like it? Give a detailed description.",
    "What detailed visual details set {article} {c} apart from similar shapes?",
)
SUMMARY_PROMPT = "Summarize the following descriptions of {article} {c} into one short image caption: {text}"
MATCHED_COLUMNS = ("image", "label", "class", "descriptions", "scores")


def fine_grained_requests(classname: str) -> list[Request]:
    """GIST's kind of questions about one class, as ``fine_grained`` requests (class named first)."""
    return [Request("fine_grained", q.format(article=article(classname), c=classname)) for q in GIST_QUESTIONS]


def describe_fine_grained(
    backend: Backend, classnames: Sequence[str], n: int, temperature: float, variants: Sequence[str] = ()
) -> dict[str, list[str]]:
    """``{class: [descriptions]}`` from ``n`` answers to each question, cleaned as CuPL's (one
    line each, the class named, repeats dropped). A class left with none is an error naming it.
    With ``variants`` (e.g. colours) the questions are also asked about each "variant class", and
    those answers describe the class too: GIST's descriptions are meant to cover the variation
    inside a class, so that matching can pick the ones that fit one image."""
    out: dict[str, list[str]] = {}
    for name in classnames:
        requests = [r for subject in [name, *(f"{v} {name}" for v in variants)] for r in fine_grained_requests(subject)]
        answers = backend.generate(requests, n, temperature)
        texts = clean_descriptions([t for texts in answers for t in texts], name)
        if not texts:
            raise LLMError(f"the {backend.name} backend gave no usable fine-grained description of {name!r}")
        out[name] = texts
    return out


def top_matches(image_features: torch.Tensor, own: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For images [N, D] and their own class's descriptions [T, D] (normalised): the indices and
    cosine scores of the ``top`` best descriptions per image, best first (ties: the earlier)."""
    scores = image_features @ own.T
    k = min(top, own.shape[0])
    order = torch.argsort(-scores, dim=1, stable=True)[:, :k]
    return order, scores.gather(1, order)


def match_images(model: Model, data: TaskData, descriptions: dict[str, list[str]], top: int) -> list[dict]:
    """One row per image: its label, class, its ``top`` descriptions from its own class and their
    scores (label-preserving matching, as GIST's)."""
    feats = model.images(data.images, "gist/match")
    rows: list[dict] = [{} for _ in range(len(data.labels))]
    for y, name in enumerate(data.classnames):
        members = np.flatnonzero(data.labels == y)
        if not len(members):
            continue
        texts = descriptions[name]
        order, scores = top_matches(feats[members], model.texts(texts), top)
        for row, i in enumerate(members):
            rows[i] = {"label": y, "class": name, "descriptions": [texts[j] for j in order[row].tolist()],
                       "scores": [round(float(s), 6) for s in scores[row]]}  # fmt: skip
    return rows


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(table: pa.Table, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp)
        tmp.replace(path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {first_line(error)}") from None


def write_matched(images: np.ndarray, rows: list[dict], path: str | Path) -> None:
    """The matched parquet: image (PNG bytes), label, class, descriptions, scores."""
    table = pa.table({
        "image": pa.array([png_bytes(im) for im in images], pa.binary()),
        "label": pa.array([r["label"] for r in rows], pa.int64()),
        "class": pa.array([r["class"] for r in rows], pa.string()),
        "descriptions": pa.array([r["descriptions"] for r in rows], pa.list_(pa.string())),
        "scores": pa.array([r["scores"] for r in rows], pa.list_(pa.float64())),
    })  # fmt: skip
    _write(table, path)


def read_matched(path: str | Path) -> pa.Table:
    """A matched parquet, checked for the columns the summary stage reads."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"cannot read matched table {path}: {first_line(error)}") from None
    missing = [c for c in ("image", "class", "descriptions") if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} (write it with vislang gist match)")
    if table.num_rows == 0:
        raise DataError(f"{path}: the table has no rows")
    return table


def summary_request(classname: str, descriptions: Sequence[str]) -> Request:
    """The request to summarise one image's matched descriptions (its class named first)."""
    text = " ".join(d.strip() for d in descriptions)
    return Request("summary", SUMMARY_PROMPT.format(article=article(classname), c=classname, text=text))


def clean_caption(text: str) -> str:
    """An answer's first non-empty line, whitespace joined and quotes stripped."""
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[0].split()).strip("\"'\u201c\u201d ") if lines else ""


def summarize_matched(backend: Backend, classes: Sequence[str], descriptions: Sequence[Sequence[str]],
                      temperature: float) -> list[str]:  # fmt: skip
    """One caption per image, each prompt asked once (images with equal matches share a prompt)."""
    requests = [summary_request(c, d) for c, d in zip(classes, descriptions)]
    distinct = list(dict.fromkeys(requests))
    answers = dict(zip(distinct, backend.generate(distinct, 1, temperature)))
    captions = []
    for request, name in zip(requests, classes):
        caption = clean_caption(answers[request][0])
        if not caption:
            raise LLMError(f"the {backend.name} backend gave an empty summary for an image of {name!r}")
        captions.append(caption)
    return captions


def write_pairs(matched: pa.Table, captions: Sequence[str], path: str | Path) -> None:
    """The pairs parquet vislang's table source trains on: image (bytes), caption, and the
    matched table's label and class where it has them (``label_column: label`` lets FLYP's loss
    keep same-class images out of each other's negatives)."""
    columns = {"image": matched.column("image").combine_chunks(), "caption": pa.array(list(captions), pa.string())}
    for name in ("label", "class"):
        if name in matched.column_names:
            columns[name] = matched.column(name).combine_chunks()
    _write(pa.table(columns), path)
