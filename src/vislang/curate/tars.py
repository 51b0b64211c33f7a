"""Webdataset tar shards read sample by sample for curation, streaming (no index needed).

One rule for every stage: members are grouped by webdataset's key (the path up to the first dot
of the file name, :func:`vislang.data.shards.split_key`), and a sample's uid is its ``KEY.json``
``uid`` field when there is one (DataComp's shards), else the key; so the outputs of the stages
intersect by uid. A truncated or unreadable shard yields what precedes the damage.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from vislang.data.shards import split_key


def tar_samples(path: Path, extensions: set[str] | None = None) -> Iterator[tuple[str, dict[str, bytes], dict]]:
    """(uid, {extension: bytes}, parsed KEY.json) per sample; only ``extensions`` are read (all
    when None), the json always."""
    key, files = None, {}

    def finish() -> tuple[str, dict[str, bytes], dict]:
        try:
            meta = json.loads(files.pop("json")) if "json" in files else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        return str(meta.get("uid", key)), files, meta

    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                member_key, extension = split_key(member.name)
                if member_key != key:
                    if key is not None:
                        yield finish()
                    key, files = member_key, {}
                if extension == "json" or extensions is None or extension in extensions:
                    files[extension] = tar.extractfile(member).read()
    except (tarfile.ReadError, EOFError, OSError):
        pass  # truncated or unreadable from here on
    if key is not None:
        yield finish()
