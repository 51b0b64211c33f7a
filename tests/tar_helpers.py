"""Small builders for shard tests: PNG bytes and tar files from (name, bytes) members."""

from __future__ import annotations

import io
import tarfile

from PIL import Image


def png(color=(200, 30, 30), size=(20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
