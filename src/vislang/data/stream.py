"""Webdataset shards read as streams: remote URLs (``https://``, ``s3://``, ... as webdataset's
``gopen`` opens them), ``pipe:`` commands, or local shards with ``access: stream``.

A stream cannot seek, so the data of one rank's worker is a *lane*: lane ``l`` of ``L`` (``L`` =
ranks x workers per rank) reads its own share of the shards, in full, one after another, and
the batches of that worker take their samples from it in order.

- Finite shard lists visit the shards epoch after epoch, each epoch in a seeded order; lane
  ``l`` reads every ``L``-th shard of that order. With fewer shards than lanes, lanes share
  shards: the ``k`` lanes on one shard each read every ``k``-th sample of it, so every lane
  still gets data and no sample is read twice per epoch.
- ``resampled``: every lane draws shards at random with replacement from its own seeded
  generator ("virtual epochs": the stream never ends and needs no epoch boundary).
- ``shuffle_buffer``: samples pass a seeded buffer of that many raw (undecoded) samples.

Resume is exact: the lane's position (how many samples its earlier batches took) is a function
of the step, and a resumed lane reads up to it again without decoding. With known shard sizes
(``sizes.json`` or img2dataset's ``*_stats.json`` beside the shards) and no shuffle buffer, whole
shards before the position are skipped unread.

A shard that ends mid-member yields the samples before the cut and then one ``truncated_shard``
marker; one that cannot be opened (missing file, failed ``pipe:`` command) yields one
``unreadable_file`` marker. Markers take a position in the stream and count as skipped samples.
An empty (zero-byte) shard holds nothing.
"""

from __future__ import annotations

import itertools
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vislang.data.decode import BadSample, SampleDecoder, decode_caption
from vislang.data.shards import expand_urls, image_extension, is_remote, sample_captions
from vislang.data.source import StreamedSource
from vislang.data.video import clip_media
from vislang.errors import DataError

BAD = "__bad__"


def read_sizes(urls: list[str]) -> list[int | None]:
    """Samples per shard from ``sizes.json`` ({shard file name: n}) or img2dataset's
    ``NNNNN_stats.json`` ("successes") beside local shards; None where unknown."""
    sizes: list[int | None] = []
    tables: dict[Path, dict] = {}
    for url in urls:
        if is_remote(url):
            sizes.append(None)
            continue
        path = Path(url)
        if path.parent not in tables:
            try:
                tables[path.parent] = json.loads((path.parent / "sizes.json").read_text())
            except (OSError, ValueError):
                tables[path.parent] = {}
        n = tables[path.parent].get(path.name)
        if n is None:
            try:
                n = json.loads(path.with_name(path.stem + "_stats.json").read_text())["successes"]
            except (OSError, ValueError, KeyError, TypeError):
                n = None
        sizes.append(int(n) if isinstance(n, int | float) else None)
    return sizes


def shard_samples(url: str) -> Iterator[dict]:
    """The samples of one shard as webdataset groups them (``__key__`` and one entry per file
    extension), then a ``{BAD: reason}`` marker if the shard could not be read to its end."""
    from webdataset.tariterators import tarfile_samples

    errors: list[Exception] = []

    def keep_going(error: Exception) -> bool:
        errors.append(error)
        return True

    yield from tarfile_samples([{"url": url}], handler=keep_going)
    if not url.startswith("pipe:"):  # an empty file holds nothing; an empty pipe means a failed command
        errors = [e for e in errors if "empty file" not in str(e)]
    if errors:
        cut = all(isinstance(e, tarfile.ReadError) and "empty file" not in str(e) for e in errors)
        yield {BAD: "truncated_shard" if cut else "unreadable_file"}


def _shuffled(items: Iterator[dict], size: int, rng: np.random.Generator) -> Iterator[dict]:
    """A seeded buffer shuffle of an endless stream."""
    buffer: list[dict] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        k = int(rng.integers(size))
        yield buffer[k]
        buffer[k] = item


class ShardStream(StreamedSource):
    """A streamed shard source; batches take samples from :meth:`lane` and decode them."""

    def __init__(
        self, spec: str, decoder: SampleDecoder, seed: int, resampled: bool = False, shuffle_buffer: int = 1000
    ) -> None:
        self.urls = expand_urls(spec)
        self.sizes = read_sizes(self.urls)
        self.decoder = decoder
        self.seed, self.resampled, self.shuffle_buffer = seed, resampled, shuffle_buffer

    @property
    def size(self) -> int | None:
        """Samples in one pass, where every shard's size is known (``sizes.json``, ``*_stats.json``)."""
        return None if None in self.sizes else sum(self.sizes)

    # -- which samples a lane reads --------------------------------------------------------------

    def _plan(self, lane: int, lanes: int) -> Iterator[tuple[int, int, int]]:
        """Endless (shard, stride, offset) visits of ``lane``: read samples i of the shard with
        i % stride == offset."""
        n = len(self.urls)
        if self.resampled:
            rng = np.random.default_rng([self.seed, 405, lane])
            while True:
                yield int(rng.integers(n)), 1, 0
        epoch = 0
        while True:
            order = np.random.default_rng([self.seed, 404, epoch]).permutation(n)
            if n >= lanes:
                for shard in order[lane::lanes]:
                    yield int(shard), 1, 0
            else:
                yield int(order[lane % n]), len(range(lane % n, lanes, n)), lane // n
            epoch += 1

    def split(self, lanes: int) -> str:
        """How the shards are spread over ``lanes`` lanes, for the log."""
        n = len(self.urls)
        if self.resampled:
            return f"{n} shards resampled independently by each of {lanes} lanes"
        if n >= lanes:
            low, high = n // lanes, -(-n // lanes)
            return f"{n} shards over {lanes} lanes: {low if low == high else f'{low}-{high}'} shards per lane per epoch"
        return f"fewer shards ({n}) than lanes ({lanes}): up to {-(-lanes // n)} lanes share a shard, each reading every k-th sample"

    def lane(self, lane: int, lanes: int, skip: int = 0) -> Iterator[dict]:
        """Raw samples of ``lane`` from position ``skip`` on (earlier ones are read, not decoded)."""
        first_visit = 0
        if self.shuffle_buffer == 0:  # whole shards before the position are skipped unread
            for shard, stride, offset in self._plan(lane, lanes):
                size = self.sizes[shard]
                mine = len(range(offset, size, stride)) if size is not None else 0
                if not mine or skip < mine:
                    break
                skip -= mine
                first_visit += 1
        stream = self._read(itertools.islice(self._plan(lane, lanes), first_visit, None))
        if self.shuffle_buffer:
            stream = _shuffled(stream, self.shuffle_buffer, np.random.default_rng([self.seed, 406, lane]))
        for _ in range(skip):
            next(stream)
        return stream

    def _read(self, visits: Iterator[tuple[int, int, int]]) -> Iterator[dict]:
        empty_visits = 0
        for shard, stride, offset in visits:
            got = 0
            for i, sample in enumerate(shard_samples(self.urls[shard])):
                if (i % stride == offset) if BAD not in sample else offset == 0:
                    got += 1
                    yield sample
            empty_visits = 0 if got else empty_visits + 1
            if empty_visits > len(self.urls):  # a whole pass without one sample for this lane
                raise DataError(
                    f"a data lane got no sample in a whole pass over the shards {self.urls[0]}"
                    f"{' ...' if len(self.urls) > 1 else ''} (shards with fewer samples than lanes "
                    "sharing them? use fewer data.num_workers or ranks)"
                )

    # -- decoding ----------------------------------------------------------------------------------

    def decode(self, raw: dict, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        if BAD in raw:
            raise BadSample(raw[BAD])
        captions = sample_captions(raw.get("txt"), raw.get("json"))
        if self.decoder.clips:  # a video member or numbered frames (vislang.data.video)
            return self.decoder.decode(lambda: clip_media(raw, raw.__getitem__), captions, rng)
        return self.decoder.decode(lambda: raw[image_extension(raw)], captions, rng)

    def one_pass(self) -> Iterator[dict]:
        for url in self.urls:
            yield from shard_samples(url)

    def captions(self, n: int) -> list[str]:
        out: list[str] = []
        for sample in self.one_pass():
            try:
                out.append(decode_caption(sample.get("txt")))
            except BadSample:
                continue
            if len(out) >= n:
                break
        return out

    def describe(self) -> str:
        total = f", {self.size} samples" if self.size is not None else ""
        order = "resampled" if self.resampled else "epochs"
        return f"{len(self.urls)} streamed shards{total}, {order}, shuffle buffer {self.shuffle_buffer}"
