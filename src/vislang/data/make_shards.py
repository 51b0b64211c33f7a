"""Writing webdataset shards (``vislang data make-shards`` and ``vislang data synth``).

Shards are written with webdataset's ``ShardWriter`` as ``OUT/00000.tar, 00001.tar, ...`` in the
img2dataset layout (``KEY.<image extension>``, ``KEY.txt`` with the first caption, ``KEY.json``
with all captions and any metadata) plus ``OUT/sizes.json`` ({shard file name: samples}).
Images are copied byte for byte from tables and folders (no re-encoding); the world is encoded
as PNG (lossless) or JPEG. Captions lose their surrounding whitespace (a caption file's trailing
newline), as training's decoding does. A row or file that cannot be read is left out and counted
by reason on stderr; a source of which nothing can be read is an error naming the first failure.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from vislang.data.decode import BadSample
from vislang.data.samples import folder_captions, read_table, resolve_image, scan_folder
from vislang.errors import DataError

Record = tuple[str, bytes, str, list[str], dict]  # key, image bytes, image extension, captions, metadata


def write_shards(records: Iterable[Record], out: str | Path, shard_size: int) -> dict[str, int]:
    """Write ``records`` as shards in ``out`` (which must hold none yet) and ``sizes.json``. If
    the records fail, or hold nothing ({} is returned), the shards begun are removed again."""
    import webdataset as wds

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.tar")):
        raise DataError(f"{out} already holds .tar shards; choose an empty folder")
    sizes: dict[str, int] = {}
    try:
        with wds.ShardWriter(str(out / "%05d.tar"), maxcount=shard_size, verbose=0) as writer:
            for key, image, extension, captions, meta in records:
                writer.write(
                    {
                        "__key__": key,
                        extension: image,
                        "txt": captions[0] if captions else "",
                        "json": json.dumps({"captions": captions, **meta}).encode(),
                    }
                )
                name = Path(writer.fname).name
                sizes[name] = sizes.get(name, 0) + 1
    except BaseException:
        _remove_shards(out)
        raise
    if not sizes:  # the caller says why; no empty shard is left behind
        _remove_shards(out)
        return sizes
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n")
    return sizes


def _remove_shards(out: Path) -> None:
    for shard in out.glob("*.tar"):  # all ours: the folder held none before
        shard.unlink(missing_ok=True)


class Skips:
    """Samples left out of the shards, by reason, with the first one of each (for the message)."""

    def __init__(self, source: str | Path) -> None:
        self.source = source
        self.first: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def add(self, reason: str, what: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.first.setdefault(reason, what)

    def report(self, written: int) -> None:
        """Nothing written: a one-line error naming the first skip; else the counts on stderr."""
        if not self.counts:
            return
        reasons = ", ".join(f"{n} {reason} (first: {self.first[reason]})" for reason, n in sorted(self.counts.items()))
        if not written:
            raise DataError(f"{self.source}: no sample could be written: {reasons}")
        print(f"make-shards: skipped {sum(self.counts.values())} samples of {self.source}: {reasons}", file=sys.stderr)


def _read_image(value: object, root: Path) -> tuple[bytes, str]:
    """(bytes, extension) of a table's image cell; :class:`BadSample` names why it cannot be read."""
    source = resolve_image(value, root)
    if isinstance(source, bytes):
        return source, "jpg" if source[:2] == b"\xff\xd8" else "png"
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise BadSample("missing_file") from None
    except OSError:
        raise BadSample("unreadable_file") from None
    return data, source.suffix.lstrip(".").lower() or "jpg"


def table_records(path: str | Path, image_column: str, caption_columns: list[str]) -> Iterator[Record]:
    """The rows of a table whose image can be read; the others are counted by reason (on stderr),
    and a table of which no row can be read is a :class:`DataError` naming the first."""
    root = Path(path).parent
    images, columns = read_table(path, image_column, caption_columns)
    skips, written = Skips(path), 0
    for row in range(len(images)):
        cell = images[row].as_py()
        try:
            data, extension = _read_image(cell, root)
        except BadSample as bad:
            where = str(root / cell) if isinstance(cell, str) and cell else f"row {row}"
            skips.add(bad.reason, f"{where} not found" if bad.reason == "missing_file" else where)
            continue
        captions = []
        for column in columns:
            text = column[row].as_py()
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            if text and text.strip():
                captions.append(text.strip())
        written += 1
        yield f"{row:09d}", data, extension, captions, {"row": row}
    skips.report(written)


def folder_records(root: str | Path) -> Iterator[Record]:
    """The images of a folder with their captions (the caption file's text without surrounding
    whitespace, as training decodes it); an image whose .json captions cannot be read is counted."""
    skips, written = Skips(root), 0
    for i, image in enumerate(scan_folder(root)):
        try:
            raw = folder_captions(image)
            data = image.read_bytes()
        except BadSample as bad:
            skips.add(bad.reason, str(image.with_suffix(".json")))
            continue
        except OSError:
            skips.add("unreadable_file", str(image))
            continue
        captions = [c.decode("utf-8", errors="replace") if isinstance(c, bytes) else c for c in raw]
        written += 1
        yield (
            f"{i:09d}",
            data,
            image.suffix.lstrip(".").lower(),
            [c.strip() for c in captions if c.strip()],
            {"file": image.name},
        )
    skips.report(written)


def world_records(world, n: int, split: str = "train", image_format: str = "png") -> Iterator[Record]:
    from PIL import Image

    for i in range(n):
        image, caption, scene = world.sample(split, i)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG" if image_format == "png" else "JPEG", quality=95)
        meta = {"index": i, "objects": [o.__dict__ for o in scene.objects], "relation": scene.relation}
        yield f"{i:09d}", buffer.getvalue(), image_format, [caption], meta
