"""The images of a pool, file by file: (uid, encoded bytes) for every image, streamed.

Pool files are image folders (every image below, uid = path relative to the folder), webdataset
tar shards (the first image member of each sample; uid = ``KEY.json``'s ``uid`` when present,
as in DataComp's shards, else the key: the same rule as :mod:`vislang.curate.texts`) and parquet
tables (an id column and an image column holding encoded bytes or paths relative to the table).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from braceexpand import braceexpand

from vislang.curate.tars import tar_samples
from vislang.data.samples import IMAGE_SUFFIXES
from vislang.errors import DataError

IMAGE_EXTENSIONS = {s.lstrip(".") for s in IMAGE_SUFFIXES}


def expand_image_inputs(specs: list[str]) -> list[Path]:
    """Image folders, tar shards and parquet tables of a pool (brace patterns allowed)."""
    files: list[Path] = []
    for spec in specs:
        for item in braceexpand(spec):
            path = Path(item)
            if not path.exists():
                raise DataError(f"pool file not found: {path}")
            if path.is_file() and path.suffix not in (".tar", ".parquet"):
                raise DataError(f"{path}: unsupported pool file (use an image folder, .tar or .parquet)")
            files.append(path)
    return files


def read_images(path: Path, id_column: str = "uid", image_column: str = "image") -> Iterator[tuple[str, bytes]]:
    """(uid, encoded image bytes) of every image of one pool file, in file order."""
    if path.is_dir():
        for image in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            yield str(image.relative_to(path)), image.read_bytes()
    elif path.suffix == ".tar":
        for uid, _, data in _tar_pairs(path):
            yield uid, data
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=[id_column, image_column])
        except Exception as error:  # pyarrow raises several types
            raise DataError(f"cannot read {path} (columns {id_column!r}, {image_column!r}): {error}") from None
        for uid, value in zip(table.column(id_column).to_pylist(), table.column(image_column).to_pylist()):
            if isinstance(value, str):
                target = path.parent / value
                value = target.read_bytes() if target.is_file() else b""
            yield str(uid), value or b""


def read_pairs(path: Path, id_column: str = "uid", text_column: str = "caption", image_column: str = "image") -> Iterator[
    tuple[str, str, bytes]
]:  # fmt: skip
    """(uid, caption, encoded image) of every sample of a tar shard (the uid of ``KEY.json`` when
    it has one, as DataComp's shards do, else the key), an image folder (sidecar ``.txt``) or a
    parquet table."""
    if path.suffix == ".tar":
        yield from _tar_pairs(path)
        return
    if path.is_dir():  # images with a sidecar .txt caption
        for image in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            text = image.with_suffix(".txt")
            caption = text.read_text(encoding="utf-8", errors="replace") if text.is_file() else ""
            yield str(image.relative_to(path)), caption, image.read_bytes()
        return
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=[id_column, text_column, image_column])
    except Exception as error:  # pyarrow raises several types
        raise DataError(f"cannot read {path} (columns {id_column}, {text_column}, {image_column}): {error}") from None
    columns = (table.column(c).to_pylist() for c in (id_column, text_column, image_column))
    for uid, text, value in zip(*columns):
        if isinstance(value, str):
            target = path.parent / value
            value = target.read_bytes() if target.is_file() else b""
        yield str(uid), text if isinstance(text, str) else "", value or b""


def _tar_pairs(path: Path) -> Iterator[tuple[str, str, bytes]]:
    for uid, files, meta in tar_samples(path):
        image = next((files[e] for e in files if e in IMAGE_EXTENSIONS), b"")
        caption = files["txt"].decode("utf-8", errors="replace") if "txt" in files else str(meta.get("caption", ""))
        yield uid, caption, image
