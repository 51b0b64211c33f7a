"""Samples of T frames: videos (mp4, webm) by PyAV, frame folders, shard members (a video or
numbered frames), tables of video paths, frame sampling, bad videos skipped by reason, 5-D
batches and the motion world. Videos are written here from motion-world clips."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tar_helpers import write_tar
from vislang.config import DataConfig, SourceConfig, VisionConfig
from vislang.data import build_batches, build_source, build_sources
from vislang.data.decode import BadSample
from vislang.data.video import decode_video, frame_indices, read_clip, write_video
from vislang.data.world import World
from vislang.data.world_motion import DIRECTIONS, MotionWorld, motion_caption
from vislang.errors import ConfigError
from vislang.experiment import build_config

SIZE, T = 32, 4


def tokenize(texts):
    return torch.tensor([[len(t)] for t in texts])


@pytest.fixture(scope="module")
def motion():
    return MotionWorld(World(SIZE, seed=3), frames=8)


def jpeg(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def config(source: dict, **data) -> DataConfig:
    return DataConfig(sources=[SourceConfig(**source)], **data)


def one(cfg: DataConfig):
    return build_source(cfg, cfg.sources[0], SIZE, 0)


def error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def close(a: np.ndarray, b: np.ndarray, tolerance: float = 12.0) -> bool:
    return error(a, b) < tolerance


def in_order(got: np.ndarray, frames: np.ndarray) -> bool:
    """Close to ``frames`` and closer to them than to them reversed (the object is small)."""
    return close(got, frames) and error(got, frames) < 0.8 * error(got, frames[::-1])


@pytest.mark.parametrize("suffix", ["mp4", "webm"])
def test_a_written_video_decodes_to_its_frames(tmp_path, motion, suffix):
    clip = motion.sample("train", 0).frames
    path = write_video(tmp_path / f"clip.{suffix}", clip, fps=8)
    frames = decode_video(path, 10**8)
    assert len(frames) == len(clip)
    for frame, original in zip(frames, clip):
        assert close(np.asarray(frame.to_image()), original)
    with pytest.raises(BadSample) as bad:
        decode_video(tmp_path / "absent.mp4", 10**8)
    assert bad.value.reason == "missing_file"


def test_frame_indices_uniform_random_and_short_clips():
    assert frame_indices(10, 4, "uniform").tolist() == [1, 3, 6, 8]
    assert frame_indices(3, 6, "uniform").tolist() == [0, 0, 1, 1, 2, 2]  # a short clip repeats frames
    draws = [frame_indices(100, 5, "random", np.random.default_rng([7, i])) for i in range(20)]
    again = [frame_indices(100, 5, "random", np.random.default_rng([7, i])) for i in range(20)]
    assert all((a == b).all() for a, b in zip(draws, again))  # a pure function of the seed
    for d in draws:
        assert (d // 20 == np.arange(5)).all()  # one frame in each segment, in time order
    assert len({tuple(d) for d in draws}) > 10
    with pytest.raises(ValueError):
        frame_indices(10, 4, "sideways")


def test_folder_of_videos_and_frame_folders(tmp_path, motion):
    video, frames = motion.sample("train", 1), motion.sample("train", 2)
    write_video(tmp_path / "a.mp4", video.frames)
    (tmp_path / "a.txt").write_text(video.caption)
    (tmp_path / "b").mkdir()
    for i, frame in enumerate(frames.frames):
        Image.fromarray(frame).save(tmp_path / "b" / f"{i:03d}.png")
    (tmp_path / "b.txt").write_text(frames.caption)
    source = one(config({"kind": "folder", "path": str(tmp_path), "shuffle": False}, frames=T))
    assert source.size == 2
    for position, clip in enumerate([video, frames]):
        got, caption = source.get(position, np.random.default_rng(0))
        assert got.shape == (T, SIZE, SIZE, 3) and caption == clip.caption
        picked = clip.frames[frame_indices(8, T, "uniform")]
        assert in_order(got, picked)
    # still images: a folder source of frames 0 does not see the videos
    with pytest.raises(Exception, match="no images"):
        one(config({"kind": "folder", "path": str(tmp_path)}))


@pytest.mark.parametrize("access", ["random", "stream"])
def test_shards_with_a_video_member_or_numbered_frames(tmp_path, motion, access):
    a, b = motion.sample("train", 3), motion.sample("train", 4)
    mp4 = write_video(tmp_path / "a.mp4", a.frames).read_bytes()
    members = [("s0.mp4", mp4), ("s0.txt", a.caption.encode())]
    members += [(f"s1.{i}.jpg", jpeg(f)) for i, f in reversed(list(enumerate(b.frames)))]  # stored out of order
    members += [("s1.txt", b.caption.encode()), ("s2.txt", b"no media")]
    write_tar(tmp_path / "00000.tar", members)
    source_config = {"kind": "shards", "path": str(tmp_path / "00000.tar"), "access": access, "shuffle_buffer": 0}
    source_config |= {"shuffle": False} if access == "random" else {}
    cfg = config(source_config, frames=T)
    batch = build_batches(cfg, VisionConfig(image_size=SIZE), 3, 0, tokenize, build_sources(cfg, SIZE, 0))[0]
    assert batch["image"].shape == (2, T, 3, SIZE, SIZE)
    assert batch["counts"] == {"skipped/missing_image": 1}
    if access == "random":
        source = one(cfg)
        clips = {source.get(p, np.random.default_rng(0))[1]: source.get(p, np.random.default_rng(0))[0] for p in (0, 1)}
        for clip in (a, b):
            picked = clip.frames[frame_indices(8, T, "uniform")]
            assert in_order(clips[clip.caption], picked)


def test_table_with_a_video_path_column(tmp_path, motion):
    clip = motion.sample("train", 5)
    write_video(tmp_path / "v.webm", clip.frames)
    (tmp_path / "t.csv").write_text(f"video,caption\nv.webm,{clip.caption}\n")
    source = one(config({"kind": "table", "path": str(tmp_path / "t.csv"), "image_column": "video"}, frames=T))
    got, caption = source.get(0, np.random.default_rng(0))
    assert caption == clip.caption and in_order(got, clip.frames[frame_indices(8, T, "uniform")])


def write_empty_video(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        container.start_encoding()


def test_corrupt_truncated_and_empty_videos_are_skipped_and_counted(tmp_path, motion):
    clip = motion.sample("train", 6)
    good = write_video(tmp_path / "good.mp4", clip.frames).read_bytes()
    webm = write_video(tmp_path / "whole.webm", clip.frames).read_bytes()
    (tmp_path / "whole.webm").unlink()
    (tmp_path / "garbage.mp4").write_bytes(good[:8] + b"\x00" * 600)
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 3])  # its index (moov) is at the end: unopenable
    (tmp_path / "cut.webm").write_bytes(webm[: len(webm) * 2 // 3])  # decodes, but ends early
    write_empty_video(tmp_path / "empty.mp4")
    (tmp_path / "noframes").mkdir()
    for name in ("good", "garbage", "cut", "empty", "noframes"):
        (tmp_path / f"{name}.txt").write_text(f"the {name} clip")
    cfg = config({"kind": "folder", "path": str(tmp_path)}, frames=T)
    batch = build_batches(cfg, VisionConfig(image_size=SIZE), 6, 0, tokenize, build_sources(cfg, SIZE, 0))[0]
    assert batch["counts"] == {
        "skipped/video_corrupt": 2,
        "skipped/video_truncated": 1,
        "skipped/video_empty": 2,
    }
    assert batch["image"].shape == (1, T, 3, SIZE, SIZE)
    with pytest.raises(BadSample) as bad:
        read_clip(tmp_path / "cut.webm", T, "uniform", 10**8, np.random.default_rng(0))
    assert bad.value.reason == "video_truncated"


def test_batches_are_5d_for_clips_and_4d_for_stills_and_pure_functions_of_the_index(tmp_path, motion):
    for i in range(3):
        clip = motion.sample("train", 10 + i)
        write_video(tmp_path / f"c{i}.mp4", clip.frames)
        (tmp_path / f"c{i}.txt").write_text(clip.caption)
    cfg = config({"kind": "folder", "path": str(tmp_path)}, frames=T, frame_sampling="random", random_crop=True)
    vision = VisionConfig(image_size=SIZE)
    first = build_batches(cfg, vision, 4, 0, tokenize, build_sources(cfg, SIZE, 0))
    second = build_batches(cfg, vision, 4, 0, tokenize, build_sources(cfg, SIZE, 0))
    for b in (0, 5):  # the same batch from a fresh loader (a resume): the same frames and crops
        assert torch.equal(first[b]["image"], second[b]["image"])
    assert first[0]["image"].shape == (4, T, 3, SIZE, SIZE)
    assert not torch.equal(first[0]["image"], first[1]["image"])
    world = DataConfig(world={"motion": True, "motion_frames": 6})
    assert build_batches(world, vision, 5, 0, tokenize, build_sources(world, SIZE, 0))[0]["image"].shape == (
        5, 6, 3, SIZE, SIZE,
    )  # fmt: skip
    still = DataConfig()
    assert build_batches(still, vision, 5, 0, tokenize, build_sources(still, SIZE, 0))[0]["image"].shape == (
        5, 3, SIZE, SIZE,
    )  # fmt: skip


def test_motion_clip_length_must_agree_with_data_frames():
    with pytest.raises(ConfigError, match="motion_frames"):
        build_config({}, ["data.world.motion=true", "data.world.motion_frames=8", "data.frames=4"])
    build_config({}, ["data.world.motion=true", "data.world.motion_frames=8", "data.frames=8"])


def centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(frame.max(axis=-1) > 110)  # the object; the background stays darker
    return np.array([xs.mean(), ys.mean()])


def test_motion_world_moves_the_object_the_way_its_caption_says(motion):
    seen = set()
    for index in range(40):
        clip = motion.sample("train", index)
        seen.add(clip.direction)
        assert DIRECTIONS[clip.direction][1] in clip.caption
        assert motion_caption(clip.subject, clip.direction).endswith(DIRECTIONS[clip.direction][1])
        step = centroid(clip.frames[-1]) - centroid(clip.frames[0])
        expected = np.array(DIRECTIONS[clip.direction][0])
        assert step @ expected > 0.2 * SIZE, (clip.caption, step)
        assert abs(step @ expected[::-1]) < 0.1 * SIZE  # no drift across the motion
    assert seen == set(DIRECTIONS)
    again = motion.sample("train", 7)
    assert np.array_equal(again.frames, motion.sample("train", 7).frames)  # a pure function of the index
