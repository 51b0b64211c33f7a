"""The texts of a pool, read shard by shard: (uid, [text, ...]) per image, streamed.

A pool is a list of files, each one unit of work: parquet tables and JSONL files (a uid column
and one or more text columns; a list-valued column gives several texts), or webdataset tar
shards (the uid is ``KEY.json``'s ``uid`` field when there is one, as in DataComp's shards, else
the key; texts from ``KEY.json``'s ``captions`` list, else ``KEY.txt``). Nothing but the texts is read: images in shards are skipped over.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from braceexpand import braceexpand

from vislang.curate.tars import tar_samples
from vislang.errors import DataError

SUFFIXES = (".parquet", ".jsonl", ".tar")


def expand_inputs(specs: list[str]) -> list[Path]:
    """Files of the pool: brace patterns (``pool/{00000..00099}.parquet``), folders (their
    parquet/JSONL/tar files, sorted) and files; each must exist and have a known suffix."""
    files: list[Path] = []
    for spec in specs:
        for item in braceexpand(spec):
            path = Path(item)
            if path.is_dir():
                found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
                if not found:
                    raise DataError(f"{path}: no .parquet, .jsonl or .tar files")
                files += found
            elif not path.is_file():
                raise DataError(f"pool file not found: {path}")
            elif path.suffix not in SUFFIXES:
                raise DataError(f"{path}: unsupported pool file (use .parquet, .jsonl or .tar)")
            else:
                files.append(path)
    names = [p.stem for p in files]
    if len(set(names)) != len(names):
        raise DataError("pool files must have distinct names (their outputs are named after them)")
    return files


def _as_texts(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def read_texts(path: Path, id_column: str = "uid", text_columns: tuple[str, ...] = ("caption",)) -> Iterator[
    tuple[str, list[str]]
]:  # fmt: skip
    """(uid, texts) for every image of one pool file, in file order."""
    if path.suffix == ".tar":
        yield from _tar_texts(path)
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise DataError(f"{path}:{number}: not a JSON object") from None
                if id_column not in row:
                    raise DataError(f"{path}:{number}: no {id_column!r} field")
                yield str(row[id_column]), [t for c in text_columns for t in _as_texts(row.get(c))]
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except Exception as error:  # pyarrow raises several types for unreadable files
            raise DataError(f"cannot read {path}: {error}") from None
        names = set(table.schema_arrow.names)
        missing = [c for c in (id_column, *text_columns) if c not in names]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(sorted(names))})")
        for batch in table.iter_batches(columns=[id_column, *text_columns], batch_size=65536):
            columns = [batch.column(c).to_pylist() for c in (id_column, *text_columns)]
            for uid, *values in zip(*columns):
                yield str(uid), [t for v in values for t in _as_texts(v)]


def _tar_texts(path: Path) -> Iterator[tuple[str, list[str]]]:
    """Texts of a webdataset shard, sample by sample: the ``captions`` list of ``KEY.json`` when
    it has one (vislang's shards: all captions), else ``KEY.txt``, else the json's ``caption``
    (img2dataset writes the same text to both)."""
    for uid, files, meta in tar_samples(path, {"txt"}):
        if "captions" in meta:
            yield uid, _as_texts(meta["captions"])
        elif "txt" in files:
            yield uid, [files["txt"].decode("utf-8", errors="replace")]
        else:
            yield uid, _as_texts(meta.get("caption"))
