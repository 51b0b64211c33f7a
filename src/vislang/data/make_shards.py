"""Writing webdataset shards (``vislang data make-shards`` and ``vislang data synth``).

Shards are written with webdataset's ``ShardWriter`` as ``OUT/00000.tar, 00001.tar, ...`` in the
img2dataset layout (``KEY.<image extension>``, ``KEY.txt`` with the first caption, ``KEY.json``
with all captions and any metadata) plus ``OUT/sizes.json`` ({shard file name: samples}).
Images are copied byte for byte from tables and folders (no re-encoding); the world is encoded
as PNG (lossless) or JPEG.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from vislang.data.decode import BadSample
from vislang.data.samples import folder_captions, read_table, resolve_image, scan_folder
from vislang.errors import DataError

Record = tuple[str, bytes, str, list[str], dict]  # key, image bytes, image extension, captions, metadata


def write_shards(records: Iterable[Record], out: str | Path, shard_size: int) -> dict[str, int]:
    import webdataset as wds

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.tar")):
        raise DataError(f"{out} already holds .tar shards; choose an empty folder")
    sizes: dict[str, int] = {}
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
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n")
    return sizes


def table_records(path: str | Path, image_column: str, caption_columns: list[str]) -> Iterator[Record]:
    root = Path(path).parent
    images, columns = read_table(path, image_column, caption_columns)
    for row in range(len(images)):
        try:
            source = resolve_image(images[row].as_py(), root)
            data = source if isinstance(source, bytes) else source.read_bytes()
        except (BadSample, OSError):
            continue  # unreadable rows stay out of the shards; `vislang data inspect` counts them
        if isinstance(source, bytes):
            extension = "jpg" if data[:2] == b"\xff\xd8" else "png"
        else:
            extension = source.suffix.lstrip(".").lower() or "jpg"
        captions = []
        for column in columns:
            cell = column[row].as_py()
            if isinstance(cell, bytes):
                cell = cell.decode("utf-8", errors="replace")
            if cell and cell.strip():
                captions.append(cell)
        yield f"{row:09d}", data, extension, captions, {"row": row}


def folder_records(root: str | Path) -> Iterator[Record]:
    for i, image in enumerate(scan_folder(root)):
        captions = [c.decode("utf-8", errors="replace") if isinstance(c, bytes) else c for c in folder_captions(image)]
        yield f"{i:09d}", image.read_bytes(), image.suffix.lstrip(".").lower(), captions, {"file": image.name}


def world_records(world, n: int, split: str = "train", image_format: str = "png") -> Iterator[Record]:
    from PIL import Image

    for i in range(n):
        image, caption, scene = world.sample(split, i)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG" if image_format == "png" else "JPEG", quality=95)
        meta = {"index": i, "objects": [o.__dict__ for o in scene.objects], "relation": scene.relation}
        yield f"{i:09d}", buffer.getvalue(), image_format, [caption], meta
