"""``vislang curate video``: scene-change keyframes, subtitle parsing, narration windows and rules,
the shards it writes and training on them. Videos are generated here with PyAV: solid-colour
scenes with hard cuts at known frames (one scene with a moving square), 8 frames per second."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vislang.curate.subtitles import (
    Cue,
    FillerStripper,
    NarrationRules,
    apply_rules,
    parse_srt,
    parse_vtt,
    read_rules,
    read_subtitles,
)
from vislang.curate.video import (
    VideoCurationOptions,
    best_keyframes,
    colour_histogram,
    histogram_distance,
    pair_subtitles,
    scene_keyframes,
    window_cues,
)
from vislang.errors import ConfigError, DataError

FPS = 8
RED, GREEN, BLUE, YELLOW = (208, 48, 48), (48, 208, 48), (48, 48, 208), (208, 208, 48)
# (colour, frames, moving square): cuts at frames 0, 16, 28, 48 = 0 s, 2 s, 3.5 s, 6 s
SCENES_1 = [(RED, 16, False), (GREEN, 12, True), (BLUE, 20, False), (YELLOW, 12, False)]
CUTS_1 = [0.0, 2.0, 3.5, 6.0]
SCENES_2 = [(BLUE, 16, False), (YELLOW, 16, False), (RED, 16, True), (GREEN, 16, False)]
CUTS_2 = [0.0, 2.0, 4.0, 6.0]

SRT_1 = """1
00:00:00,200 --> 00:00:01,000
Here we see the red scene.

2
00:00:01,000 --> 00:00:01,400
Um, uh.

3
00:00:02.100 --> 00:00:02,900
Okay so the green field
with a <i>small</i> square.

4
00:00:03,000 --> 00:00:03,400 X1:10 X2:50 Y1:10 Y2:20
{\\an8}It keeps <font color="white">moving</font>.

5
00:00:03,600 --> 00:00:04,800
Blue now, a different stain entirely.

6
00:00:05,000 --> 00:00:05,500
Edge words here only.

7
00:00:06,200 --> 00:00:07,000
Um.
"""

VTT_2 = """\ufeffWEBVTT - narration of lecture 2
Kind: captions

NOTE this comment is not a cue,
it runs over two lines

STYLE
::cue { color: yellow }

intro
00:00.300 --> 00:01.000 align:start position:10%
Hi.

00:00:02.200 --> 00:00:03.000
<v Dr. Lee>Nuclei are <c.hl>enlarged</c> &amp; crowded.</v>

00:00:04.200 --> 00:00:04.800
I, a, <00:00:04.500>b.
"""


def write_video(path, scenes, codec, options=None):
    import av

    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for colour, frames, square in scenes:
            for i in range(frames):
                image = np.empty((48, 64, 3), np.uint8)
                image[:] = colour
                if square:  # a small white square moving across the scene: motion, not a new scene
                    image[20:28, 4 * i : 4 * i + 8] = 255
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vislang.cli", *args], capture_output=True, text=True, timeout=300)


def keyframe_times(path, **options):
    return [k.time for k in scene_keyframes(path, VideoCurationOptions(**options), Counter())]


# -- scores and keyframes ------------------------------------------------------------------------


def test_histogram_distance_matches_an_independent_histogram():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    for image in (a, b):
        expected = np.histogramdd(image.reshape(-1, 3), bins=[8, 8, 8], range=[(0, 256)] * 3)[0].ravel()
        np.testing.assert_allclose(colour_histogram(image), expected / expected.sum())
    half = np.zeros((16, 16, 3), np.uint8)
    half[:8] = 255
    assert histogram_distance(colour_histogram(half), colour_histogram(np.zeros_like(half))) == pytest.approx(0.5)
    assert histogram_distance(colour_histogram(a), colour_histogram(a)) == 0


@pytest.mark.parametrize(("name", "codec"), [("v.mp4", "mpeg4"), ("v.mp4", "libx264"), ("v.webm", "libvpx-vp9")])
@pytest.mark.parametrize("score", ["histogram", "grey"])
def test_keyframes_land_on_the_scene_cuts(tmp_path, name, codec, score):
    write_video(tmp_path / name, SCENES_1, codec)
    times = keyframe_times(tmp_path / name, score=score, min_gap=0.5)
    assert len(times) == len(CUTS_1)
    assert all(abs(t - cut) <= 1 / FPS + 1e-9 for t, cut in zip(times, CUTS_1))


def test_min_gap_and_max_keyframes(tmp_path):
    write_video(tmp_path / "v.mp4", SCENES_1, "mpeg4")
    # the cut at 2 s comes too soon after 0 s; the first frame 3 s after it differs from red
    assert keyframe_times(tmp_path / "v.mp4", min_gap=3.0) == [0.0, 3.0, 6.0]
    keyframes = list(scene_keyframes(tmp_path / "v.mp4", VideoCurationOptions(min_gap=0.5), Counter()))
    best = best_keyframes(keyframes, 2)
    strongest_cut = max(keyframes[1:], key=lambda k: k.score)
    assert [k.time for k in best] == [0.0, strongest_cut.time]  # the first frame scores 1, in time order
    # grey levels 96 (red), 142 (green), 66 (blue), 190 (yellow): scored against the last keyframe
    # (red), only yellow differs by 0.25 of 255
    assert keyframe_times(tmp_path / "v.mp4", score="grey", threshold=0.25, min_gap=0.5) == [0.0, 6.0]


def test_corrupt_and_truncated_videos(tmp_path):
    from vislang.curate.video import CorruptVideo

    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(CorruptVideo):
        keyframe_times(tmp_path / "garbage.mp4")
    # index first (faststart), then cut: decoding fails part way; the keyframes before stay
    write_video(tmp_path / "whole.mp4", SCENES_1, "mpeg4", {"movflags": "faststart"})
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 4 // 5])
    counts = Counter()
    times = [k.time for k in scene_keyframes(tmp_path / "cut.mp4", VideoCurationOptions(min_gap=0.5), counts)]
    assert counts["videos_truncated"] == 1 and 1 <= len(times) < len(CUTS_1)
    assert all(abs(t - cut) <= 1 / FPS + 1e-9 for t, cut in zip(times, CUTS_1))


# -- subtitles -----------------------------------------------------------------------------------


def test_srt_cues_are_parsed_exactly():
    cues = parse_srt(SRT_1)
    assert [(c.index, c.start, c.end) for c in cues[:4]] == [(0, 0.2, 1.0), (1, 1.0, 1.4), (2, 2.1, 2.9), (3, 3.0, 3.4)]
    assert cues[2].text == "Okay so the green field with a small square."
    assert cues[3].text == "It keeps moving."
    assert len(cues) == 7 and cues[6].text == "Um."
    assert parse_srt(SRT_1.replace("\n", "\r\n")) == cues  # Windows line ends


def test_vtt_cues_skip_header_notes_styles_and_settings():
    cues = parse_vtt(VTT_2.lstrip("\ufeff"))
    assert [(c.start, c.end, c.text) for c in cues] == [
        (0.3, 1.0, "Hi."),
        (2.2, 3.0, "Nuclei are enlarged & crowded."),
        (4.2, 4.8, "I, a, b."),
    ]


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("a.srt", "1\n00:00:01,000 -> 00:00:02,000\nhello\n", "line 2: expected a timing line after the cue number"),
        (
            "b.srt",
            "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 --> 00:00:0x,000\nhi\n",
            "line 6: not a cue",
        ),
        ("c.srt", "1\n00:00:05,000 --> 00:00:02,000\nbackwards\n", "line 2: the cue ends before it starts"),
        ("d.srt", "just some text\nwithout timing\n", "line 1: expected a cue number or timing line"),
        ("e.srt", "1\n00:61:01,000 --> 00:62:02,000\nminute 61\n", "line 2: not a cue timing"),
        ("f.vtt", "00:00:01.000 --> 00:00:02.000\nno header\n", "line 1: a WebVTT file starts with 'WEBVTT'"),
        ("g.vtt", "WEBVTT\n\nid\nnot a timing\n", "line 4: expected a cue timing line"),
        ("h.vtt", "WEBVTT\n00:01.000 --> 00:02.000\nglued to the header\n", "line 2: a blank line must separate"),
    ],
)
def test_malformed_subtitles_name_the_file_and_line(tmp_path, name, text, needle):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=needle) as error:
        read_subtitles(tmp_path / name)
    assert str(error.value).startswith(str(tmp_path / name)) and "\n" not in str(error.value)


# -- narration rules and windows -------------------------------------------------------------------


def test_filler_rules_strip_and_drop():
    rules = NarrationRules()
    stripper = FillerStripper(rules.fillers)

    def cues(*texts):
        return [Cue(i, i, i + 1, t) for i, t in enumerate(texts)]

    assert stripper.remove("Okay so, um, this is a gland.") == "this is a gland."
    assert stripper.remove("So, uh, the nucleus, um.") == "So, the nucleus"
    assert stripper.remove("A drummer and an umbrella, uhhh") == "A drummer and an umbrella, uhhh"  # whole words
    assert apply_rules(cues("Um, uh...", "Let's see."), rules, stripper) == (None, "only_filler", [])
    assert apply_rules(cues("Um.", "Here is the gland.", ""), rules, stripper) == ("Here is the gland.", "", [1])
    assert apply_rules(cues("Two words"), rules, stripper) == (None, "too_few_words", [])
    assert apply_rules(cues("I a b"), rules, stripper) == (None, "too_short", [])
    assert apply_rules(cues(""), rules, stripper) == (None, "no_narration", [])
    kept = NarrationRules(strip_fillers=False)
    assert apply_rules(cues("Um, this is a gland."), kept, stripper)[0] == "Um, this is a gland."


def test_rules_file_and_its_errors(tmp_path):
    (tmp_path / "rules.yaml").write_text("fillers: [basically, 'you see']\nmin_words: 2\n")
    rules = read_rules(tmp_path / "rules.yaml", {"min_chars": 4})
    assert rules.fillers == ["basically", "you see"] and rules.min_words == 2 and rules.min_chars == 4
    assert FillerStripper(rules.fillers).remove("Basically, you see, a gland") == "a gland"
    (tmp_path / "bad.json").write_text('{"min_word": 2}')
    with pytest.raises(ConfigError, match=r"bad.json: unknown config key 'min_word'"):
        read_rules(tmp_path / "bad.json", {})


def test_window_cues_overlap_not_touch():
    cues = [Cue(0, 1.0, 2.0, "a"), Cue(1, 2.0, 3.0, "b"), Cue(2, 0.5, 1.2, "c"), Cue(3, 4.0, 4.0, "d")]
    assert [c.text for c in window_cues(cues, 1.0, 2.0)] == ["c", "a"]  # in time order; b only touches
    assert [c.text for c in window_cues(cues, 3.0, 4.0)] == ["d"]


def test_subtitles_pair_by_stem_or_order(tmp_path):
    videos = [tmp_path / "b.mp4", tmp_path / "a.mp4"]
    subs = [tmp_path / "a.srt", tmp_path / "b.vtt"]
    assert pair_subtitles(videos, subs) == [(videos[0], subs[1]), (videos[1], subs[0])]
    other = [tmp_path / "x.srt", tmp_path / "y.srt"]
    assert pair_subtitles(videos, other) == list(zip(videos, other))
    with pytest.raises(ConfigError, match="b.mp4: 0 subtitle files have its stem"):
        pair_subtitles(videos, other, "stem")
    with pytest.raises(ConfigError, match="1 subtitle files for 2 videos"):
        pair_subtitles(videos, other[:1])


# -- the command -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    (root / "videos").mkdir()
    write_video(root / "videos" / "lecture1.mp4", SCENES_1, "mpeg4")
    write_video(root / "videos" / "lecture2.webm", SCENES_2, "libvpx-vp9")
    (root / "videos" / "broken.mp4").write_bytes(b"not a video at all" * 50)
    (root / "lecture1.srt").write_text(SRT_1)
    (root / "lecture2.vtt").write_text(VTT_2)
    (root / "broken.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nnever read\n")
    subs = [str(root / n) for n in ("lecture1.srt", "lecture2.vtt", "broken.srt")]
    result = run_cli(
        "curate", "video", str(root / "videos"), "--subtitles", *subs, "--out", str(root / "shards"),
        "--min-gap", "0.5", "--before", "0.5", "--after", "1.5", "--shard-size", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root, result


def read_samples(folder):
    samples = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                key, _, extension = member.name.partition(".")
                samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return samples


def test_pairs_hold_the_narration_of_their_window(curated):
    root, result = curated
    samples = read_samples(root / "shards")
    assert all(set(s) == {"jpg", "txt", "json"} and s["jpg"][:2] == b"\xff\xd8" for s in samples.values())
    got = [(json.loads(s["json"]), s["txt"].decode()) for _, s in sorted(samples.items())]
    expected = [  # (video, cut, window, cues, text)
        ("lecture1", 0.0, (0.0, 1.5), [0], "Here we see the red scene."),
        ("lecture1", 2.0, (1.5, 3.5), [2, 3], "the green field with a small square. It keeps moving."),
        ("lecture1", 3.5, (3.0, 5.0), [3, 4], "It keeps moving. Blue now, a different stain entirely."),
        ("lecture2", 2.0, (1.5, 3.5), [1], "Nuclei are enlarged & crowded."),
    ]
    assert len(got) == len(expected)
    for (meta, text), (video, cut, (start, end), cue_indices, caption) in zip(got, expected):
        assert meta["video"] == video and abs(meta["time"] - cut) <= 1 / FPS + 1e-9
        assert meta["window_start"] == pytest.approx(max(0.0, meta["time"] - 0.5))
        assert meta["window_end"] == pytest.approx(meta["time"] + 1.5)
        if meta["time"] == cut:  # the windows above assume the keyframe exactly on the cut
            assert (meta["window_start"], meta["window_end"]) == pytest.approx((start, end))
        assert meta["cues"] == cue_indices and text == caption and meta["captions"] == [caption]
    # each image is the frame at its time: the colour of the scene that starts at the cut
    colours = [np.asarray(Image.open(io.BytesIO(s["jpg"]))).reshape(-1, 3).mean(0) for _, s in sorted(samples.items())]
    for colour, scene in zip(colours, [RED, GREEN, BLUE, YELLOW]):
        assert np.abs(colour - scene).max() < 24


def test_summary_counts_drops_and_corrupt_videos(curated):
    root, result = curated
    summary = json.loads((root / "shards" / "video.json").read_text())
    assert summary["videos"] == 3 and summary["videos_corrupt"] == 1 and "broken.mp4" in summary["corrupt"][0]
    assert summary["keyframes"] == 8 and summary["pairs"] == 4
    assert summary["dropped"] == {"only_filler": 1, "too_few_words": 1, "too_short": 1, "no_narration": 1}
    assert summary["shards"] == {"00000.tar": 3, "00001.tar": 1}
    assert json.loads((root / "shards" / "sizes.json").read_text()) == summary["shards"]
    assert "4 pairs kept" in result.stdout and "1 corrupt" in result.stdout
    assert "broken.mp4" in result.stderr
    assert not [p for p in root.iterdir() if "partial" in p.name]  # the temporary folder is gone


def test_rules_file_and_flags_reach_the_pairs(tmp_path):
    write_video(tmp_path / "lecture1.mp4", SCENES_1, "mpeg4")
    (tmp_path / "lecture1.srt").write_text(SRT_1)
    (tmp_path / "rules.json").write_text('{"min_words": 3, "min_chars": 2}')
    result = run_cli(
        "curate", "video", str(tmp_path / "lecture1.mp4"), "--subtitles", str(tmp_path / "lecture1.srt"),
        "--out", str(tmp_path / "out"), "--min-gap", "0.5", "--before", "0.5", "--after", "1.5",
        "--rules", str(tmp_path / "rules.json"), "--min-words", "1", "--fillers", "", "--keep-fillers",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    texts = [s["txt"].decode() for _, s in sorted(read_samples(tmp_path / "out").items())]
    assert texts[0] == "Here we see the red scene. Um, uh."  # no fillers: cue 1 is narration
    assert texts[1] == "Okay so the green field with a small square. It keeps moving."
    assert texts[-1] == "Um." and len(texts) == 4  # one word and 3 characters pass the rules given


def test_malformed_subtitles_are_one_line_exit_2(tmp_path):
    write_video(tmp_path / "talk.mp4", SCENES_1[:2], "mpeg4")
    (tmp_path / "talk.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nfine\n\n2\n00:00:03 --> 00:00:04,000\nbad\n")
    result = run_cli("curate", "video", str(tmp_path / "talk.mp4"), "--subtitles", str(tmp_path / "talk.srt"),
                     "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "talk.srt: line 6" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_shards_train(curated, tiny_overrides):
    root, _ = curated
    config = root / "tiny.yaml"
    config.write_text(
        f"objective: clip\ndata:\n  sources: [{{kind: shards, path: '{root / 'shards'}/{{00000..00001}}.tar'}}]\n"
    )
    sets = [*tiny_overrides, "train.steps=2", "train.eval_every=2", "train.checkpoint_every=2", "train.batch_size=4"]
    result = run_cli(
        "train", str(config), "--out", str(root / "run"), "--quiet", *[a for s in sets for a in ("--set", s)]
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["train/loss"] for r in records if "train/loss" in r}
    assert 2 in losses and all(np.isfinite(v) for v in losses.values())
    assert not any(k.startswith("data/skipped/") for r in records for k in r)
