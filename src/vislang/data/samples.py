"""Random-access training sources: sample ``p`` of a source's endless stream, as a pure function.

- :class:`WorldSamples`: the built-in world (train split, index ``p``).
- :class:`TableSamples`: a CSV / TSV / parquet table; the image column holds paths (relative to
  the table) or encoded bytes (also Hugging Face's ``{"bytes", "path"}`` structs); one or more
  caption columns.
- :class:`FolderSamples`: a folder of images with sidecar captions: ``NAME.txt`` (one caption)
  and/or ``NAME.json`` (``{"captions": [...]}``, a list, or a string). With a clip decoder
  (``data.frames`` > 1) also videos (``NAME.mp4`` beside ``NAME.txt``) and frame folders
  (``NAME/`` of frame images beside ``NAME.txt``): :mod:`vislang.data.video`.

Table and folder streams visit the rows epoch by epoch, each epoch in its own seeded order:
position ``p`` is row ``perm_e[p mod N]`` with ``e = p // N`` (or, resampled, a seeded draw). Columns stay in Arrow buffers,
so worker processes share them without copying (no per-row Python objects to touch).
``get`` returns ``(image uint8 [S, S, 3], caption)`` (through the source's
:class:`~vislang.data.decode.SampleDecoder`) or raises :class:`BadSample`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from vislang.data.decode import BadSample, SampleDecoder, decode_caption
from vislang.data.source import RandomAccessSource
from vislang.data.video import is_clip_path
from vislang.data.world import World
from vislang.errors import DataError, first_line

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder``, recursive, in sorted path order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def decodable_captions(read_first: Callable[[object], object], items: Iterable) -> list[str]:
    """The first caption of each item (``read_first(item)``) that decodes; the others are left out.
    Used to gather a tokenizer's training texts from any source."""
    out = []
    for item in items:
        try:
            out.append(decode_caption(read_first(item)))
        except (BadSample, IndexError):
            continue
    return out


def resolve_image(value: object, root: Path) -> bytes | Path:
    """A table cell as encoded bytes (binary column, or Hugging Face's ``{"bytes", "path"}``
    struct) or as a path, absolute or relative to the table's folder (string column); an empty
    cell is a ``missing_file`` :class:`BadSample`. Videos' cells are read the same way."""
    if isinstance(value, dict):  # Hugging Face datasets' Image feature
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes | bytearray) and value:
        return bytes(value)
    if isinstance(value, str) and value.strip():
        return root / Path(value.strip()).expanduser()  # an absolute path replaces the root
    raise BadSample("missing_file")


class WorldSamples(RandomAccessSource):
    """The built-in world's train split: sample ``p`` is world sample ``p`` (rendered, no files).
    ``crop`` (``data.random_crop`` in training): a random-resized crop of each rendered scene,
    drawn from the sample's generator, as a file source's images get it."""

    def __init__(
        self, world: World, crop: Callable[[Image.Image, np.random.Generator], np.ndarray] | None = None
    ) -> None:
        self.world, self.crop = world, crop

    @property
    def size(self) -> None:
        return None  # procedural: it never ends

    def describe(self) -> str:
        return "procedural"

    def get(self, position: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        image, caption, _ = self.world.sample("train", position)
        if self.crop is not None:
            image = self.crop(Image.fromarray(image), rng)
        return image, caption

    def captions(self, n: int) -> list[str]:
        w = self.world
        return [w.caption(w.sample_scene(rng := w.rng("train", i), "train"), rng) for i in range(n)]


class RowOrder:
    """Row of stream position ``p``: a fresh seeded permutation of the N rows every epoch, or,
    ``resampled``, a seeded uniform draw per position (sampling with replacement, no epochs), or,
    without ``shuffle``, the stored order every epoch."""

    def __init__(self, n: int, seed: int, resampled: bool = False, shuffle: bool = True) -> None:
        self.n, self.seed, self.resampled, self.shuffle = n, seed, resampled, shuffle
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def row(self, position: int) -> int:
        if self.resampled:
            return int(np.random.default_rng([self.seed, 505, position]).integers(self.n))
        epoch, offset = divmod(position, self.n)
        if not self.shuffle:
            return offset
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return int(self._order[offset])


class RowSource(RandomAccessSource):
    """A finite random-access source of ``n`` rows, visited in a :class:`RowOrder` and decoded by
    the shared :class:`SampleDecoder` (tables, folders and local shards)."""

    def __init__(self, n: int, decoder: SampleDecoder, seed: int, resampled: bool, shuffle: bool) -> None:
        self.decoder = decoder
        self.order = RowOrder(n, seed, resampled, shuffle)

    def __len__(self) -> int:
        return self.order.n

    @property
    def size(self) -> int:
        return self.order.n

    def describe(self) -> str:
        return f"{self.order.n} samples"


def read_table(path: str | Path, image_column: str, caption_columns: list[str]):
    """The table's image column and caption columns as Arrow arrays (captions as raw bytes for
    CSV/TSV, so a non-UTF-8 cell costs one sample, not the file)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data source not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
        elif suffix in (".csv", ".tsv", ".tab"):
            delimiter = "\t" if suffix != ".csv" else ","
            types = {name: pa.binary() for name in caption_columns} | {image_column: pa.string()}
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
            )
        else:
            raise DataError(f"{path}: unknown table format {suffix!r} (use .parquet, .csv or .tsv)")
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"cannot read table {path}: {first_line(error)}") from None
    missing = [c for c in [image_column, *caption_columns] if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(table.column_names)})")
    if table.num_rows == 0:
        raise DataError(f"{path}: the table has no rows")
    return table.column(image_column).combine_chunks(), [table.column(c).combine_chunks() for c in caption_columns]


def table_labels(path: str | Path, column: str, cells) -> np.ndarray:
    """A table's label column as non-negative integers; anything else is one line naming it."""
    try:
        values = [int(v) if not isinstance(v, bytes) else int(v.decode()) for v in cells.to_pylist()]
    except (TypeError, ValueError, UnicodeDecodeError):
        raise DataError(f"{path}: column {column!r} must hold integer class labels") from None
    labels = np.asarray(values, dtype=np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{path}: column {column!r} holds a negative label ({labels.min()})")
    return labels


class TableSamples(RowSource):
    def __init__(
        self,
        path: str | Path,
        image_column: str,
        caption_columns: list[str],
        decoder: SampleDecoder,
        seed: int,
        resampled: bool = False,
        shuffle: bool = True,
        label_column: str | None = None,
    ) -> None:
        self.root = Path(path).parent
        columns = caption_columns + ([label_column] if label_column else [])
        self.images, self.captions_columns = read_table(path, image_column, columns)
        # a label column rides with the captions through read_table's checks, then is taken off
        self.labels = table_labels(path, label_column, self.captions_columns.pop()) if label_column else None
        super().__init__(len(self.images), decoder, seed, resampled, shuffle)

    def get(self, position: int, rng: np.random.Generator) -> tuple:
        row = self.order.row(position)
        cells = [column[row].as_py() for column in self.captions_columns]
        image = lambda: resolve_image(self.images[row].as_py(), self.root)  # noqa: E731
        sample = self.decoder.decode(image, [c for c in cells if c is not None], rng)
        return sample if self.labels is None else (*sample, int(self.labels[row]))

    def captions(self, n: int) -> list[str]:
        return decodable_captions(lambda row: self.captions_columns[0][row].as_py(), range(min(n, len(self))))


def scan_folder(root: str | Path, clips: bool = False) -> list[Path]:
    """Image files under ``root`` (recursive), sorted, that have a .txt or .json caption file;
    with ``clips`` also video files and frame folders that have one."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data source folder not found: {root}")
    images = sorted(
        p
        for p in root.rglob("*")
        if (p.suffix.lower() in IMAGE_SUFFIXES or (clips and is_clip_path(p)))
        and (p.with_suffix(".txt").exists() or p.with_suffix(".json").exists())
    )
    if not images:
        what = "images, videos or frame folders" if clips else "images"
        raise DataError(f"{root}: no {what} with a .txt or .json caption file")
    return images


def folder_captions(image: Path) -> list[bytes | str]:
    """The captions of one folder image: its .txt (whole file, one caption) and its .json."""
    captions: list[bytes | str] = []
    text, meta = image.with_suffix(".txt"), image.with_suffix(".json")
    if text.exists():
        captions.append(text.read_bytes())
    if meta.exists():
        try:
            data = json.loads(meta.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadSample("bad_text") from None
        if isinstance(data, dict):
            data = data.get("captions", data.get("caption", []))
        captions += [data] if isinstance(data, str) else [c for c in data if isinstance(c, str)]
    return captions


class FolderSamples(RowSource):
    def __init__(
        self, root: str | Path, decoder: SampleDecoder, seed: int, resampled: bool = False, shuffle: bool = True
    ) -> None:
        self.images = scan_folder(root, decoder.clips)
        super().__init__(len(self.images), decoder, seed, resampled, shuffle)

    def get(self, position: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        path = self.images[self.order.row(position)]
        return self.decoder.decode(path, folder_captions(path), rng)

    def captions(self, n: int) -> list[str]:
        return decodable_captions(lambda path: folder_captions(path)[0], self.images[:n])
