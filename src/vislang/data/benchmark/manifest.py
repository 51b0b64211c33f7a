"""A table of images (CSV, TSV or parquet, chosen by extension) with a label column for
classification or caption columns for retrieval.

The image column holds a path (relative to an image root, by default the manifest's folder) or,
in parquet, the encoded bytes (a binary column, or Hugging Face's ``{bytes, path}`` struct).
Labels are integer indices into the class list, or class names (then the class list defaults
to the sorted distinct names). Captions are one or more columns, or one column holding a list
(a parquet list, or a JSON list in a CSV cell). Every problem names the manifest and the row:
the line number in a CSV, the 0-based row in parquet.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vislang.data.benchmark.base import BytesImages, FileImages, ImageSet, require_files, take
from vislang.errors import DataError, first_line
from vislang.files import read_text

IMAGE_COLUMNS = ("image", "filepath", "file_name", "filename", "path", "image_path")
CAPTION_COLUMNS = ("caption", "captions", "text", "title")
LABEL_COLUMNS = ("label", "class", "target")
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass
class Table:
    """A manifest's columns as Python values, with the label of each row for messages."""

    path: Path
    columns: dict[str, list[Any]]
    rows: list[str]  # "line 7" (CSV: where the row starts) or "row 5" (parquet, 0-based)

    def column(self, wanted: str | None, guesses: tuple[str, ...], what: str) -> str:
        """The column to use: ``wanted``, else the first of ``guesses`` present."""
        names = [wanted] if wanted else list(guesses)
        for name in names:
            if name in self.columns:
                return name
        listed = ", ".join(self.columns)
        asked = f"no column {wanted!r}" if wanted else f"no {what} column (looked for {', '.join(guesses)})"
        raise DataError(f"{self.path}: {asked}; its columns: {listed}")

    def head(self, n: int | None) -> Table:
        return Table(self.path, {k: take(v, n) for k, v in self.columns.items()}, take(self.rows, n))

    def where(self, i: int) -> str:
        return f"{self.path} {self.rows[i]}"


def _read_delimited(path: Path, delimiter: str) -> Table:
    lines = read_text(path, "manifest").lstrip("\ufeff").splitlines(keepends=True)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
        rows, starts, last = [], [], reader.line_num
        for row in reader:
            if row:  # a blank line is not a row
                if len(row) != len(header):
                    raise DataError(f"{path} line {last + 1}: {len(row)} fields, the header has {len(header)}")
                rows.append(row)
                starts.append(f"line {last + 1}")
            last = reader.line_num
    except StopIteration:
        raise DataError(f"{path}: the manifest is empty (no header line)") from None
    except csv.Error as problem:
        raise DataError(f"{path} line {reader.line_num}: not valid CSV ({first_line(problem)})") from None
    columns = {name: [row[j] for row in rows] for j, name in enumerate(header)}
    return Table(path, columns, starts)


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        table = pq.read_table(path)
    except Exception as problem:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"{path}: not a readable parquet file ({first_line(problem)})") from None
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    return Table(path, columns, [f"row {i}" for i in range(table.num_rows)])


def read_table(path: str | Path) -> Table:
    """A manifest by its extension: ``.csv``, ``.tsv`` or ``.parquet``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        table = _read_parquet(path)
    elif suffix in (".csv", ".tsv"):
        table = _read_delimited(path, "," if suffix == ".csv" else "\t")
    else:
        raise DataError(f"{path}: a manifest is .csv, .tsv or .parquet, not {suffix or 'a file without extension'}")
    if not table.rows:
        raise DataError(f"{path}: the manifest has no rows")
    return table


def manifest_images(table: Table, column: str, root: Path) -> ImageSet:
    """The images of the image column: files (checked to exist) or encoded bytes."""
    values = table.columns[column]
    if all(isinstance(v, dict) for v in values):  # Hugging Face Image: {"bytes": ..., "path": ...}
        values = [v.get("bytes") or v.get("path") for v in values]
    if all(isinstance(v, bytes) for v in values):
        return BytesImages(values, [f"{table.where(i)} ({column})" for i in range(len(values))])
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{table.where(i)}: column {column!r} holds no image path or bytes (got {value!r:.40})")
    paths = [Path(v) if Path(v).is_absolute() else root / v for v in values]
    require_files(paths, str(table.path), table.rows)
    return FileImages(paths)


def _label_values(table: Table, column: str) -> list[Any]:
    values = table.columns[column]
    for i, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{table.where(i)}: no label in column {column!r}")
    return values


def manifest_labels(table: Table, column: str, classnames: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """(label index of each row, class names): indices are checked against the class list,
    names are looked up in it (the sorted distinct names when no class list is given)."""
    values = _label_values(table, column)
    integers = all(isinstance(v, int) and not isinstance(v, bool) for v in values) or all(
        isinstance(v, str) and _INTEGER.fullmatch(v.strip()) for v in values
    )
    if integers:
        if classnames is None:
            raise DataError(f"{table.path}: column {column!r} holds label indices; give classnames for them")
        labels = [int(v.strip()) if isinstance(v, str) else v for v in values]
        for i, label in enumerate(labels):
            if not 0 <= label < len(classnames):
                raise DataError(f"{table.where(i)}: label {label} is outside the {len(classnames)} classes")
        return np.asarray(labels, dtype=np.int64), classnames
    names = [str(v).strip() for v in values]
    classnames = classnames if classnames is not None else sorted(set(names))
    index = {name: k for k, name in enumerate(classnames)}
    for i, name in enumerate(names):
        if name not in index:
            raise DataError(f"{table.where(i)}: label {name!r} is not one of the {len(classnames)} class names")
    return np.asarray([index[name] for name in names], dtype=np.int64), classnames


def _as_list(value: Any, table: Table, i: int) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{table.where(i)}: caption cell starts with '[' but is not a JSON list") from None
        if isinstance(parsed, list):
            return parsed
    return [value]


def manifest_captions(table: Table, columns: list[str]) -> list[list[str]]:
    """The captions of each row: every non-empty cell of ``columns`` (a list cell gives several)."""
    out = []
    for i in range(len(table.rows)):
        texts = []
        for column in columns:
            cell = table.columns[column][i]
            values = _as_list(cell, table, i) if len(columns) == 1 else [cell]
            texts += [v.strip() for v in values if isinstance(v, str) and v.strip()]
        if not texts:
            raise DataError(
                f"{table.where(i)}: no caption in column{'s' if len(columns) > 1 else ''} {', '.join(columns)}"
            )
        out.append(texts)
    return out


def read_manifest_classification(
    path: Path, root: Path | None, image_column: str | None, label_column: str | None,
    classnames: list[str] | None, n: int | None,
) -> tuple[ImageSet, np.ndarray, list[str]]:  # fmt: skip
    """(images, labels, class names) of a labelled manifest; the class list is of every row."""
    table = read_table(path)
    image = table.column(image_column, IMAGE_COLUMNS, "image")
    label = table.column(label_column, LABEL_COLUMNS, "label")
    labels, names = manifest_labels(table, label, classnames)
    head = table.head(n)
    images = manifest_images(head, image, root or Path(path).parent)
    return images, labels[: len(head.rows)], names


def read_manifest_retrieval(
    path: Path, root: Path | None, image_column: str | None, caption_columns: list[str] | None, n: int | None
) -> tuple[ImageSet, list[list[str]]]:
    """(images, captions of each image) of a captioned manifest."""
    table = read_table(path)
    image = table.column(image_column, IMAGE_COLUMNS, "image")
    columns = [table.column(c, (), "caption") for c in caption_columns] if caption_columns else None
    columns = columns or [table.column(None, CAPTION_COLUMNS, "caption")]
    head = table.head(n)
    captions = manifest_captions(head, columns)
    return manifest_images(head, image, root or Path(path).parent), captions
