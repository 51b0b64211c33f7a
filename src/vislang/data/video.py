"""Samples of T frames: videos decoded with PyAV, folders of frames and frames in shards.

A clip enters the model as ``uint8 [T, S, S, 3]`` (batches: ``[B, T, 3, S, S]``). Where it comes
from:

- a video file (``VIDEO_SUFFIXES``) or its bytes (recognised by the container's magic bytes):
  every frame is decoded, then T are picked;
- a folder of frames: the image files in it, in name order (``clip/000.jpg``, ``clip/001.jpg``);
- a shard sample with a video member (``KEY.mp4``) or numbered frame members (``KEY.0.jpg``,
  ``KEY.1.jpg``, ... in number order);
- a still image: one frame, repeated T times (so still and moving data can be mixed).

Which T frames (:func:`frame_indices`): ``uniform`` takes the centre of each of T equal segments,
``random`` a seeded draw within each segment; both keep time order, and a clip shorter than T
repeats frames. The draw comes from the sample's generator (seeded by its position), and every
frame gets the same crop, so a clip is a pure function of its position (exact resume).

Skip reasons added to :mod:`vislang.data.decode`'s: ``video_corrupt`` (the container cannot be
opened or no frame decodes), ``video_truncated`` (decoding fails after some frames: the file is
cut or damaged), ``video_empty`` (no video stream, no frame, or a frame folder without images).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import av
import numpy as np
from PIL import Image

from vislang.data.decode import BadSample, SampleDecoder, decode_caption, open_image, pick_caption

VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v"})
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "avi", "m4v")
FRAME_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
STILL_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_NUMBERED = re.compile(r"^(\d+)\.(jpg|jpeg|png|webp)$")  # a shard member KEY.<n>.jpg
SAMPLINGS = ("uniform", "random")


def frame_indices(n: int, t: int, sampling: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """``t`` frame indices of a clip of ``n`` frames, in time order: the centre (``uniform``) or a
    seeded random frame (``random``) of each of ``t`` equal segments."""
    if n < 1 or t < 1:
        raise ValueError(f"need at least one frame and one pick, got n={n}, t={t}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"frame sampling must be one of {SAMPLINGS}, got {sampling!r}")
    starts = np.arange(t) * n / t
    if sampling == "uniform" or rng is None:
        picks = starts + n / (2 * t)
    else:
        picks = starts + rng.uniform(0, n / t, size=t)
    return np.minimum(np.floor(picks).astype(np.int64), n - 1)


def is_video_bytes(data: bytes) -> bool:
    """Whether encoded bytes hold a video container (MP4/MOV, Matroska/WebM, AVI), not an image."""
    return (
        data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")
        or data[:4] == b"\x1a\x45\xdf\xa3"
        or (data[:4] == b"RIFF" and data[8:12] == b"AVI ")
    )


def decode_video(source: bytes | str | Path, max_pixels: int) -> list[av.VideoFrame]:
    """Every frame of a video file or its bytes, in order (:class:`BadSample` when none decodes)."""
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise BadSample("missing_file")
    frames: list[av.VideoFrame] = []
    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except (av.FFmpegError, OSError, ValueError):
        raise BadSample("video_corrupt") from None
    with container:
        if not container.streams.video:
            raise BadSample("video_empty")
        stream = container.streams.video[0]
        if (stream.codec_context.width or 0) * (stream.codec_context.height or 0) > max_pixels:
            raise BadSample("too_large")
        try:
            for frame in container.decode(stream):
                frames.append(frame)
        except (av.FFmpegError, OSError, ValueError):
            raise BadSample("video_truncated" if frames else "video_corrupt") from None
        if not frames:
            raise BadSample("video_empty")
        if _cut_short(container, stream, frames):
            raise BadSample("video_truncated")
    return frames


def _cut_short(container: av.container.InputContainer, stream: av.VideoStream, frames: list) -> bool:
    """Whether fewer frames decoded than the header promises: its frame count (MP4) or, short by
    more than a frame and a half, its duration (WebM, Matroska: a cut file decodes without an error)."""
    if stream.frames and len(frames) < stream.frames:
        return True
    rate, last = stream.average_rate, frames[-1].time
    if not container.duration or not rate or last is None:
        return False
    return last + 2.5 / float(rate) < container.duration / 1_000_000


def folder_frames(folder: Path) -> list[Path]:
    """The frame images of a frame folder, in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())


def read_clip(
    source: bytes | str | Path | Sequence[bytes], t: int, sampling: str, max_pixels: int, rng: np.random.Generator
) -> list[Image.Image]:
    """``t`` RGB frames of a video (path or bytes), a frame folder, a list of encoded frames or a
    still image, picked by ``sampling``; only the picked frames of a folder or list are decoded."""
    if isinstance(source, list | tuple):
        if not source:
            raise BadSample("video_empty")
        return [open_image(source[i], max_pixels) for i in frame_indices(len(source), t, sampling, rng)]
    if isinstance(source, bytes):
        if not is_video_bytes(source):
            return [open_image(source, max_pixels)] * t
        decoded = decode_video(source, max_pixels)
    else:
        path = Path(source)
        if path.is_dir():
            files = folder_frames(path)
            if not files:
                raise BadSample("video_empty")
            return [open_image(files[i], max_pixels) for i in frame_indices(len(files), t, sampling, rng)]
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            return [open_image(path, max_pixels)] * t
        decoded = decode_video(path, max_pixels)
    return [decoded[i].to_image().convert("RGB") for i in frame_indices(len(decoded), t, sampling, rng)]


def clip_media(extensions: Iterable[str], read: Callable[[str], bytes]) -> bytes | list[bytes]:
    """The clip of one shard sample given its member extensions: a video member's bytes, the
    numbered frame members' bytes in number order, or a still image's bytes; a sample with none
    of them is a ``missing_image`` skip."""
    found = list(extensions)
    video = next((e for e in VIDEO_EXTENSIONS if e in found), None)
    if video is not None:
        return read(video)
    numbered = sorted((int(m.group(1)), e) for e in found if (m := _NUMBERED.match(e)))
    if numbered:
        return [read(e) for _, e in numbered]
    still = next((e for e in STILL_EXTENSIONS if e in found), None)
    if still is None:
        raise BadSample("missing_image")
    return read(still)


def is_clip_path(path: Path) -> bool:
    """A folder source's clip entries: video files and frame folders."""
    return path.suffix.lower() in VIDEO_SUFFIXES or path.is_dir()


@dataclass(frozen=True)
class ClipDecoder(SampleDecoder):
    """:class:`SampleDecoder` for samples of ``frames`` frames: ``(uint8 [T, S, S, 3], caption)``.
    The caption is picked first, then the frames, then one crop that every frame shares."""

    clips: ClassVar[bool] = True
    frames: int = 2
    sampling: str = "uniform"

    def decode(self, image, captions: Sequence, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        caption = decode_caption(pick_caption(captions, rng, self.caption_pick))
        raw = image() if callable(image) else image
        frames = read_clip(raw, self.frames, self.sampling, self.max_pixels, rng)
        state = rng.bit_generator.state
        out = []
        for frame in frames:
            rng.bit_generator.state = state  # the same crop for every frame
            out.append(self.transform(frame, rng))
        return np.stack(out), caption


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8, codec: str | None = None) -> Path:
    """Write uint8 frames [T, H, W, 3] (even H and W) as a video file: H.264 for .mp4, VP8 for
    .webm unless ``codec`` names another; for tests and for turning world clips into files."""
    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frames must be [T, H, W, 3] with even H and W, got {list(frames.shape)}")
    codec = codec or ("libvpx" if path.suffix.lower() == ".webm" else "libx264")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12"}
        elif codec == "libvpx":
            stream.options = {"crf": "4", "b": "2M"}
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return path
