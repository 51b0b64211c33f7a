"""What ``vislang index`` embeds: the samples of its sources, each at a stable position.

A SOURCE on the command line is a folder of images (recursive; a sibling ``NAME.txt`` or
``NAME.json`` gives the caption, and images without one are still indexed), a table (.parquet,
.csv, .tsv: an image column of paths or encoded bytes, an optional caption column), local
webdataset shards (``a/{000..009}.tar``; read by random access through a header index) or
streamed shards (URLs, ``pipe:``). Several sources are concatenated in the order given.

Positions are fixed before anything is embedded (sorted paths, table row order, shard member
order), so that part ``p`` of the index holds positions ``p * part_size`` up to the next part,
whoever embeds it and however often the job is restarted. A stream cannot seek and its length is
unknown until it is read: its positions are its stream order, which is why streamed sources
must come after the random-access ones.

The readers are the training data's (tables, tar headers, webdataset streams, image decoding),
so a sample that trains the same way indexes the same way; only what is kept differs: an image
without a caption is a sample here, and a caption that does not decode is dropped, not the image.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from braceexpand import braceexpand

from vislang.data.decode import BadSample, decode_caption
from vislang.data.samples import IMAGE_SUFFIXES, folder_captions, image_files, read_table, resolve_image
from vislang.data.shards import (
    TRUNCATED,
    expand_urls,
    image_extension,
    is_remote,
    sample_captions,
    shard_groups,
)
from vislang.data.stream import BAD, shard_samples
from vislang.errors import DataError

TABLE_SUFFIXES = frozenset({".parquet", ".csv", ".tsv", ".tab"})
KINDS = ("folder", "table", "shards", "stream")


@dataclass(frozen=True)
class Raw:
    """One sample before decoding: its key, its image (a path or encoded bytes; None where the
    sample is known to be broken, with the skip ``reason``) and its caption, if any."""

    key: str
    image: bytes | Path | None
    caption: str | None
    reason: str | None = None


def first_caption(candidates: list) -> str | None:
    """The first candidate caption that decodes as clean text, or None."""
    for candidate in candidates:
        try:
            return decode_caption(candidate)
        except BadSample:
            continue
    return None


class FolderItems:
    """Every image file under a folder (recursive), in sorted path order; keys are the paths
    relative to the folder."""

    kind, streaming = "folder", False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.files = image_files(self.root)
        if not self.files:
            raise DataError(f"{root}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> Raw:
        path = self.files[i]
        try:
            caption = first_caption(folder_captions(path))
        except (BadSample, OSError):
            caption = None
        return Raw(path.relative_to(self.root).as_posix(), path, caption)


class TableItems:
    """The rows of a table, in stored order; the key is the image path where the column holds
    paths, else the row number."""

    kind, streaming = "table", False

    def __init__(self, path: str | Path, image_column: str, caption_column: str | None) -> None:
        self.path, self.root = Path(path), Path(path).parent
        self.images, captions = read_table(path, image_column, [caption_column] if caption_column else [])
        self.captions = captions[0] if captions else None

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> Raw:
        cell = self.images[i].as_py()
        name = cell.get("path") if isinstance(cell, dict) else cell
        key = name if isinstance(name, str) and name else str(i)
        caption = first_caption([self.captions[i].as_py()]) if self.captions is not None else None
        try:
            return Raw(key, resolve_image(cell, self.root), caption)
        except BadSample as bad:
            return Raw(key, None, caption, bad.reason)


class ShardItems:
    """Local webdataset shards by random access: every sample (key group) of every shard, in
    shard order then member order, from the tar headers alone (the samples' bytes are read by
    seek when they are embedded). A sample cut by the end of a truncated shard stays at its
    position as a ``truncated_shard`` skip."""

    kind, streaming = "shards", False

    def __init__(self, shards: list[Path]) -> None:
        self.shards = shards
        self.samples: list[tuple[int, str, dict[str, tuple[int, int]]]] = []
        for shard, path in enumerate(shards):
            groups, _ = shard_groups(path)  # a damaged shard keeps the samples before the damage
            self.samples += [(shard, key, files) for key, files in groups.items()]
        if not self.samples:
            raise DataError(f"no samples in the shards {shards[0]}{' ...' if len(shards) > 1 else ''}")
        self._handles: dict[int, object] = {}

    def __getstate__(self) -> dict:  # open files stay in the process that opened them
        return {**self.__dict__, "_handles": {}}

    def __len__(self) -> int:
        return len(self.samples)

    def _bytes(self, shard: int, byte_range: tuple[int, int]) -> bytes:
        handle = self._handles.get(shard)
        if handle is None:
            if len(self._handles) >= 16:
                self._handles.pop(next(iter(self._handles))).close()
            handle = self._handles[shard] = open(self.shards[shard], "rb")  # noqa: SIM115
        handle.seek(byte_range[0])
        return handle.read(byte_range[1])

    def read(self, i: int) -> Raw:
        shard, key, files = self.samples[i]
        if TRUNCATED in files:
            return Raw(key, None, None, "truncated_shard")
        read = lambda ext: self._bytes(shard, files[ext]) if ext in files else None  # noqa: E731
        caption = first_caption(sample_captions(read("txt"), read("json")))
        try:
            return Raw(key, read(image_extension(files)), caption)
        except BadSample as bad:
            return Raw(key, None, caption, bad.reason)


class StreamItems:
    """Streamed shards (URLs, ``pipe:`` commands) read once, in shard order; a shard that cannot
    be read to its end takes one position as a skipped sample."""

    kind, streaming = "stream", True

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    def stream(self) -> Iterator[Raw]:
        for url in self.urls:
            for sample in shard_samples(url):
                if BAD in sample:
                    yield Raw(f"{url}#end", None, None, sample[BAD])
                    continue
                caption = first_caption(sample_captions(sample.get("txt"), sample.get("json")))
                key = str(sample.get("__key__", ""))
                try:
                    yield Raw(key, sample[image_extension(sample)], caption)
                except BadSample as bad:
                    yield Raw(key, None, caption, bad.reason)


Source = FolderItems | TableItems | ShardItems | StreamItems


def open_source(spec: str, image_column: str = "image", caption_column: str | None = None) -> Source:
    """One SOURCE of the command line: a folder, a table (by its file type), local shards (read
    by random access) or shards of which some are remote (streamed)."""
    path = Path(spec)
    if not is_remote(spec) and path.is_dir():
        return FolderItems(path)
    if not is_remote(spec) and path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        return TableItems(path, image_column, caption_column)
    if not is_remote(spec) and path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(f"{spec}: one image file; give the folder that holds the images")
    if not is_remote(spec) and not path.exists() and list(braceexpand(spec)) == [spec] and len(spec.split("::")) == 1:
        raise DataError(f"source not found: {spec} (give a folder, a table, tar shards or a URL)")
    urls = expand_urls(spec)
    if any(is_remote(u) for u in urls):
        return StreamItems(urls)
    return ShardItems([Path(u) for u in urls])


def describe_source(spec: str, source: Source) -> dict:
    """What the manifest records of a source (absolute local paths, so a rerun from another
    working directory is recognised as the same job)."""
    local = not is_remote(spec) and Path(spec).exists()  # a shard pattern stays as given
    return {"kind": source.kind, "path": str(Path(spec).resolve()) if local else spec}


class Items:
    """The concatenated samples of several sources. Positions ``0 .. random_size`` are the
    random-access sources' (``read(position)``); streamed ones follow (``stream()``)."""

    def __init__(self, sources: list[Source], specs: list[dict]) -> None:
        streaming = [s.streaming for s in sources]
        if any(streaming[i] and not streaming[i + 1] for i in range(len(sources) - 1)):
            raise DataError(
                "streamed sources (URLs, pipe:) must come after the local ones: a stream's length is unknown "
                "until it is read, so nothing can follow it at a fixed position"
            )
        self.sources, self.specs = sources, specs
        self.random = [s for s in sources if not s.streaming]
        self.streams = [s for s in sources if s.streaming]
        self.starts = [0]
        for source in self.random:
            self.starts.append(self.starts[-1] + len(source))

    @property
    def random_size(self) -> int:
        return self.starts[-1]

    @property
    def size(self) -> int | None:
        """Samples in all; None while a stream's length is unknown."""
        return None if self.streams else self.random_size

    def read(self, position: int) -> Raw:
        """The raw sample at a random-access ``position``."""
        source = bisect.bisect_right(self.starts, position) - 1
        return self.random[source].read(position - self.starts[source])

    def stream(self) -> Iterator[Raw]:
        """The streamed sources' raw samples, at positions ``random_size`` on."""
        for source in self.streams:
            yield from source.stream()


def open_items(sources: list[str], image_column: str = "image", caption_column: str | None = None) -> Items:
    """The samples of the command line's SOURCEs, concatenated in order, at stable positions."""
    if not sources:
        raise DataError("give at least one source to index")
    opened = [open_source(s, image_column, caption_column) for s in sources]
    return Items(opened, [describe_source(spec, s) for spec, s in zip(sources, opened)])
