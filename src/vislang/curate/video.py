"""Narrated videos to image-text pairs (``vislang curate video``), as Quilt-1M built its pairs.

A video's keyframes are chosen by scene change: every frame is decoded (PyAV) and downscaled to
64x64, and its *difference from the last kept keyframe* is scored, so a slow pan or a fade adds up
until it counts as a new scene while a static shot never does. The default score is the total
variation distance between joint colour histograms (8 levels per channel, 512 bins): half the L1
distance of the two distributions, the share of pixels whose colour would have to change, in
[0, 1]. It ignores where things are, so moving over the same tissue or slide keeps the score low
and a cut to new content raises it to near 1. ``grey`` scores the mean absolute difference of the
64x64 grey images instead (divided by 255, also in [0, 1]), which also sees motion. The first
frame is always a keyframe (score 1); a frame is kept when its score reaches the threshold (by
default 0.3 for histograms, 0.1 for grey: a cut between two shots of similar brightness moves most
of the colour mass but few grey levels) and at
least ``min_gap`` seconds have passed since the last keyframe. ``max_keyframes`` keeps the
highest-scoring ones of a video (earlier first on ties), in time order.

Each keyframe at time t is paired with the cues that overlap ``[t - before, t + after]`` (start
clipped at 0; a cue that only touches an edge is not in it), in time order, through
:class:`~vislang.curate.subtitles.NarrationRules`. Pairs are written with ``vislang data
make-shards``' writer (KEY.jpg, KEY.txt, KEY.json), into a temporary folder beside the output
that is moved into place once complete, so a reader never sees half a set.
"""

from __future__ import annotations

import heapq
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from vislang.config.base import Section
from vislang.curate.subtitles import SUBTITLE_SUFFIXES, Cue, FillerStripper, NarrationRules, apply_rules, read_subtitles
from vislang.data.make_shards import Record, write_shards
from vislang.errors import ConfigError, DataError
from vislang.files import process_umask

VIDEO_SUFFIXES = (".mp4", ".webm")
THUMB = 64  # side of the downscaled frame that is scored
SUMMARY = "video.json"
# a hard cut moves most of the colour mass (histogram near 1) but may change grey levels by less
DEFAULT_THRESHOLDS = {"histogram": 0.3, "grey": 0.1}


class VideoCurationOptions(Section):
    """How keyframes are chosen and paired with narration."""

    score: Literal["histogram", "grey"] = Field(
        "histogram", description="scene-change score: colour-histogram distance or grey mean absolute difference"
    )
    threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="a frame scoring this against the last keyframe is kept (None: the score's default)",
    )
    min_gap: float = Field(1.0, ge=0, description="seconds at least between two keyframes")
    max_keyframes: int = Field(0, ge=0, description="at most this many keyframes per video, best scores (0: all)")
    before: float = Field(2.0, ge=0, description="seconds of narration before the keyframe in its window")
    after: float = Field(6.0, ge=0, description="seconds of narration after the keyframe in its window")
    jpeg_quality: int = Field(90, ge=1, le=95, description="JPEG quality of the written keyframes")
    rules: NarrationRules = Field(default_factory=NarrationRules, description="which narration is kept")


@dataclass(frozen=True)
class Keyframe:
    time: float
    score: float
    jpeg: bytes


class CorruptVideo(Exception):
    """A video of which no frame can be decoded (skipped and counted, never the end of a run)."""


# -- scores (pure) -----------------------------------------------------------------------------


def colour_histogram(rgb: np.ndarray) -> np.ndarray:
    """The joint colour histogram of an HxWx3 uint8 image, 8 levels per channel, summing to 1."""
    levels = rgb.reshape(-1, 3).astype(np.int64) >> 5
    bins = np.bincount(levels[:, 0] * 64 + levels[:, 1] * 8 + levels[:, 2], minlength=512)
    return bins / max(1, bins.sum())


def histogram_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance of two histograms: half their L1 distance, in [0, 1]."""
    return 0.5 * float(np.abs(p - q).sum())


def grey_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 grey images, divided by 255."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255)


class KeyframePicker:
    """Decides frame by frame, from the frames' signatures, which become keyframes."""

    def __init__(self, score: str, threshold: float, min_gap: float) -> None:
        self.distance = histogram_distance if score == "histogram" else grey_difference
        self.threshold, self.min_gap = threshold, min_gap
        self.last: tuple[float, np.ndarray] | None = None

    def offer(self, time: float, signature: np.ndarray) -> float | None:
        """The frame's score when it becomes a keyframe, else None."""
        if self.last is None:
            self.last = (time, signature)
            return 1.0
        last_time, last_signature = self.last
        if time - last_time < self.min_gap:
            return None
        score = self.distance(signature, last_signature)
        if score < self.threshold:
            return None
        self.last = (time, signature)
        return score


# -- decoding ----------------------------------------------------------------------------------


def _signature(frame, score: str) -> np.ndarray:
    if score == "histogram":
        return colour_histogram(frame.reformat(width=THUMB, height=THUMB, format="rgb24").to_ndarray())
    return frame.reformat(width=THUMB, height=THUMB, format="gray").to_ndarray()


def _jpeg(frame, quality: int) -> bytes:
    buffer = io.BytesIO()
    frame.to_image().save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def scene_keyframes(path: Path, options: VideoCurationOptions, counts: Counter) -> Iterator[Keyframe]:
    """The keyframes of one video in time order. :class:`CorruptVideo` when not one frame decodes;
    a video that breaks later keeps the keyframes before the damage (counted videos_truncated)."""
    import av

    threshold = options.threshold if options.threshold is not None else DEFAULT_THRESHOLDS[options.score]
    picker = KeyframePicker(options.score, threshold, options.min_gap)
    decoded = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CorruptVideo("no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 25)
            for frame in container.decode(stream):
                time = frame.time if frame.time is not None else decoded / rate
                decoded += 1
                score = picker.offer(time, _signature(frame, options.score))
                if score is not None:
                    yield Keyframe(time, score, _jpeg(frame, options.jpeg_quality))
    except (av.FFmpegError, OSError) as error:
        if not decoded:
            raise CorruptVideo(type(error).__name__) from None
        counts["videos_truncated"] += 1
        return
    if not decoded:
        raise CorruptVideo("no frames")


def best_keyframes(keyframes: Iterable[Keyframe], limit: int) -> list[Keyframe]:
    """The ``limit`` highest-scoring keyframes (earlier ones on ties), in time order."""
    best = heapq.nsmallest(limit, enumerate(keyframes), key=lambda item: (-item[1].score, item[0]))
    return [k for _, k in sorted(best, key=lambda item: item[0])]


# -- pairing -----------------------------------------------------------------------------------


def window_cues(cues: list[Cue], start: float, end: float) -> list[Cue]:
    """The cues overlapping [start, end] in time order; touching an edge is not overlapping
    (a zero-length cue counts when it lies in the window)."""
    inside = [
        c for c in cues if (min(c.end, end) - max(c.start, start) > 0) or (c.start == c.end and start <= c.start <= end)
    ]
    return sorted(inside, key=lambda c: (c.start, c.index))


def _files(inputs: list[str], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Files as given, folders expanded to their files with ``suffixes`` (recursively, sorted)."""
    found: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not inside:
                raise DataError(f"{path}: no {what} files ({', '.join(suffixes)}) in this folder")
            found += inside
        elif path.is_file():
            if path.suffix.lower() not in suffixes:
                raise DataError(f"{path}: not a {what} file (expected {', '.join(suffixes)})")
            found.append(path)
        else:
            raise DataError(f"{path}: not found")
    return found


def pair_subtitles(videos: list[Path], subtitles: list[Path], by: str = "auto") -> list[tuple[Path, Path]]:
    """Each video with its subtitle file: ``stem`` (the file with the same stem: lecture.mp4 and
    lecture.srt), ``order`` (the n-th video with the n-th subtitle file) or ``auto`` (by stem when
    every video has exactly one, else in order when the counts agree)."""
    by_stem: dict[str, list[Path]] = {}
    for sub in subtitles:
        by_stem.setdefault(sub.stem, []).append(sub)
    stems_fit = len({v.stem for v in videos}) == len(videos) and all(len(by_stem.get(v.stem, [])) == 1 for v in videos)
    if by == "stem" or (by == "auto" and stems_fit):
        for video in videos:
            if len(by_stem.get(video.stem, [])) != 1:
                found = by_stem.get(video.stem, [])
                raise ConfigError(
                    f"{video}: {len(found)} subtitle files have its stem {video.stem!r}; give exactly one "
                    f"({video.stem}.srt or {video.stem}.vtt)"
                )
        return [(v, by_stem[v.stem][0]) for v in videos]
    if len(videos) != len(subtitles):
        raise ConfigError(
            f"{len(subtitles)} subtitle files for {len(videos)} videos: pairing by order needs as many, and "
            f"pairing by stem found none for {next((v for v in videos if v.stem not in by_stem), videos[0])}"
        )
    return list(zip(videos, subtitles))


def _key_part(text: str) -> str:
    """Text usable inside a webdataset key (no dots, which end a key, and no separators)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def video_records(
    number: int, video: Path, cues: list[Cue], options: VideoCurationOptions, counts: Counter
) -> Iterator[Record]:
    """The kept pairs of one video as shard records; drops are counted by reason in ``counts``."""
    stripper = FillerStripper(options.rules.fillers)
    keyframes: Iterable[Keyframe] = scene_keyframes(video, options, counts)
    if options.max_keyframes:
        keyframes = best_keyframes(keyframes, options.max_keyframes)
    for k, keyframe in enumerate(keyframes):
        counts["keyframes"] += 1
        start, end = max(0.0, keyframe.time - options.before), keyframe.time + options.after
        caption, reason, used = apply_rules(window_cues(cues, start, end), options.rules, stripper)
        if caption is None:
            counts[f"dropped/{reason}"] += 1
            continue
        counts["pairs"] += 1
        meta = {
            "video": video.stem,
            "video_path": str(video),
            "time": round(keyframe.time, 6),
            "window_start": round(start, 6),
            "window_end": round(end, 6),
            "cues": used,
            "score": round(keyframe.score, 6),
        }
        yield f"{number:05d}-{_key_part(video.stem)}-{k:05d}", keyframe.jpeg, "jpg", [caption], meta


# -- the command -------------------------------------------------------------------------------


def curate_videos(
    video_inputs: list[str],
    subtitle_inputs: list[str],
    out: str | Path,
    options: VideoCurationOptions,
    pair_by: str = "auto",
    shard_size: int = 10000,
) -> dict:
    """Write the pairs of every video as shards in ``out`` with ``video.json`` (the summary, returned)."""
    videos = _files(video_inputs, VIDEO_SUFFIXES, "video")
    pairs = pair_subtitles(videos, _files(subtitle_inputs, SUBTITLE_SUFFIXES, "subtitle"), pair_by)
    narration = [(video, read_subtitles(sub)) for video, sub in pairs]  # every file checked before decoding
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: not a folder")
    if out.is_dir() and any(out.glob("*.tar")):
        raise DataError(f"{out} already holds .tar shards; choose an empty folder")
    counts: Counter = Counter()
    corrupt: list[str] = []

    def records() -> Iterator[Record]:
        for number, (video, cues) in enumerate(narration):
            try:
                yield from video_records(number, video, cues, options, counts)
            except CorruptVideo as why:
                corrupt.append(f"{video} ({why})")

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(partial, 0o777 & ~process_umask())  # mkdtemp's folder is private; the shards are not
    try:
        sizes = write_shards(records(), partial, shard_size)
        summary = _summary(len(videos), sum(len(cues) for _, cues in narration), counts, corrupt, sizes)
        if not sizes:
            raise DataError(f"no pair kept from {len(videos)} videos: {_reasons(summary)}")
        (partial / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
        _move_into_place(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return summary


def _summary(videos: int, cues: int, counts: Counter, corrupt: list[str], sizes: dict[str, int]) -> dict:
    dropped = {key.removeprefix("dropped/"): n for key, n in sorted(counts.items()) if key.startswith("dropped/")}
    return {
        "videos": videos,
        "videos_corrupt": len(corrupt),
        "corrupt": corrupt,
        "videos_truncated": counts["videos_truncated"],
        "subtitle_cues": cues,
        "keyframes": counts["keyframes"],
        "pairs": counts["pairs"],
        "dropped": dropped,
        "shards": sizes,
    }


def _reasons(summary: dict) -> str:
    parts = [f"{n} {reason}" for reason, n in summary["dropped"].items()]
    if summary["videos_corrupt"]:
        parts.append(f"{summary['videos_corrupt']} corrupt videos (first: {summary['corrupt'][0]})")
    return ", ".join(parts) or "no keyframes"


def _move_into_place(partial: Path, out: Path) -> None:
    """The finished folder becomes ``out`` in one rename; into an existing folder that holds other
    files, the shards are moved one by one and the size and summary files last."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        os.replace(partial, out)
        return
    last = ("sizes.json", SUMMARY)
    for path in sorted(partial.iterdir(), key=lambda p: p.name in last):
        os.replace(path, out / path.name)
