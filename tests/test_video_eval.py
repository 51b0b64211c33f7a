"""Video evaluation: AUROC against scikit-learn, the temporal probe's ties, the world_video suite's
tasks on untrained models (a frame-averaging model scores exactly 0.5), a tiny training on the
motion world through the normal trainer, and same_subject / video_retrieval on a table of
written videos (bad ones skipped and counted) with a stub model whose scores are known."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from vislang.config import WorldConfig
from vislang.data.video import write_video
from vislang.errors import ConfigError
from vislang.eval import TASKS, EvalContext, FeatureCache, evaluate
from vislang.eval.suite import read_suite
from vislang.eval.video import SameSubjectTask, TemporalProbeTask, VideoRetrievalTask
from vislang.eval.video_metrics import auroc, average_ranks, order_credit, pair_labels
from vislang.experiment import build_config, build_objective, eval_context
from vislang.objectives import Objective
from vislang.train.loop import train

MOTION = ["data.world.motion=true", "data.world.motion_frames=4"]


def test_auroc_matches_scikit_learn_with_and_without_ties():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 300))
        labels = rng.random(n) < rng.uniform(0.1, 0.9)
        labels[:2] = [True, False]
        scores = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.standard_normal(n) + labels
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5] * 6, [True, False] * 3) == 0.5
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [True, True])


def test_pairs_and_order_credit():
    i, j, same = pair_labels(np.array([0, 0, 1]))
    assert list(zip(i.tolist(), j.tolist(), same.tolist())) == [(0, 1, True), (0, 2, False), (1, 2, False)]
    credit = order_credit(np.array([0.5, 0.2, 0.3, 0.3]), np.array([0.4, 0.3, 0.3 + 1e-9, 0.3]))
    assert credit.tolist() == [1.0, 0.0, 0.5, 0.5]


@pytest.fixture(scope="module")
def tiny_motion(tmp_path_factory):
    from conftest import TINY

    return TINY + MOTION


def untrained(overrides: list[str]):
    cfg = build_config({}, overrides)
    objective = build_objective(cfg, 300, 0).eval()
    tokenizer = lambda texts: torch.tensor([[1 + len(t) % 7, 2 + t.count("e") % 5] for t in texts])  # noqa: E731
    return cfg, objective, eval_context(cfg, tokenizer, batch_size=16)


def test_the_temporal_probe_gives_a_frame_averaging_model_exactly_one_half(tiny_motion):
    torch.manual_seed(0)
    _, mean_model, context = untrained(tiny_motion + ["model.vision.temporal=mean"])
    [probe] = TemporalProbeTask(n=40).build(context)
    assert probe(mean_model, FeatureCache()) == {"temporal/acc": 0.5}
    _, attention_model, context = untrained(tiny_motion + ["model.vision.temporal=attention"])
    [probe] = TemporalProbeTask(n=40).build(context)
    forward = probe(attention_model, FeatureCache())["temporal/acc"]
    assert forward != 0.5  # an attention model sees order: its credits are not all ties
    probe.clips, probe.reversed = probe.reversed, probe.clips  # the clips played backwards
    assert probe(attention_model, FeatureCache())["temporal/acc"] == pytest.approx(1 - forward)


def test_same_subject_and_video_retrieval_on_untrained_models(tiny_motion):
    torch.manual_seed(0)
    _, objective, context = untrained(tiny_motion + ["model.vision.temporal=attention"])
    [same] = SameSubjectTask(subjects=6, per_subject=3).build(context)
    assert same.details() == {"kind": "auroc", "pairs": 153, "positives": 18}
    [retrieval] = VideoRetrievalTask(n=30, ks=[1, 5]).build(context)
    results = evaluate(objective, [same, retrieval])
    assert 0.0 <= results["same_subject/auroc"] <= 1.0
    assert 0.0 <= results["video_retrieval/mean_R@1"] <= 1.0
    assert len(retrieval.texts) == len(set(retrieval.texts)) == 30  # each caption once


def test_the_world_video_suite_lists_the_registered_video_tasks():
    suite = read_suite("world_video")
    assert [t.type for t in suite.tasks] == ["video_retrieval", "same_subject", "temporal"]
    assert {"video_retrieval", "same_subject", "temporal"} <= set(TASKS)


def test_a_tiny_training_on_the_motion_world(tiny_motion, tmp_path):
    tasks = "eval.tasks=[{type: temporal, n: 20}, {type: same_subject, subjects: 4, per_subject: 2}]"
    for pool in ("attention", "mean"):
        cfg = build_config({}, tiny_motion + [f"model.vision.temporal={pool}", "train.steps=4", tasks,
                                              "train.eval_every=4", "train.checkpoint_every=4"])  # fmt: skip
        metrics = train(cfg, tmp_path / pool, quiet=True)
        assert np.isfinite(metrics["train/loss"]) if "train/loss" in metrics else True
        assert 0.0 <= metrics["same_subject/auroc"] <= 1.0
        if pool == "mean":
            assert metrics["temporal/acc"] == 0.5
        assert (tmp_path / pool / "checkpoints").is_dir()


# -- your own videos: a table of clips ------------------------------------------------------------

# Six clips of three patients (two each), each clip one flat colour (same patient: similar
# colours, not equal, so the AUROC is neither 1 nor 0.5), and the caption colours of retrieval,
# two of which are nearer another clip than their own (R@1 5/6 both ways).
COLOURS = [(200, 60, 60), (150, 130, 40), (60, 200, 70), (170, 160, 30), (50, 70, 200), (150, 40, 160)]
CAPTION_COLOURS = [(190, 70, 60), (200, 190, 40), (60, 190, 60), (160, 150, 40), (60, 60, 190), (140, 50, 150)]
PATIENTS = ["p0", "p0", "p1", "p1", "p2", "p2"]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class MeanColour(Objective):
    """A stub whose clip embedding is the clip's mean (normalised) colour and whose caption
    "R G B" embeds as that colour normalised the same way: scores computable by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Linear(1, 1)  # a parameter: evaluators ask it for the device

    def loss(self, batch):
        raise NotImplementedError

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[1:] == (4, 3, 32, 32)  # [B, T, 3, S, S]: 4 frames at the model's size
        return images.mean(dim=(1, 3, 4))

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return normalised(tokens.float())

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return image_features @ text_features.T


def normalised(colours):
    return (torch.as_tensor(colours, dtype=torch.float32) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)


def colour_context() -> EvalContext:
    tokenizer = lambda texts: torch.tensor([[int(v) for v in t.split()] for t in texts])  # noqa: E731
    return EvalContext(tokenizer, 32, MEAN, STD, 4, 0, WorldConfig(), open_source=None)


def write_empty_video(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()


@pytest.fixture(scope="module")
def echo_table(tmp_path_factory) -> Path:
    """A CSV of 6 good clips (40x48 frames, resized to 32; one a frame folder) and 2 bad ones."""
    root = tmp_path_factory.mktemp("echo")
    (root / "clips").mkdir()
    rows = []
    for i, colour in enumerate(COLOURS):
        frames = np.tile(np.array(colour, np.uint8), (4, 40, 48, 1))
        if i == 5:  # a frame folder
            (root / "clips" / "c5").mkdir()
            for t, frame in enumerate(frames):
                Image.fromarray(frame).save(root / "clips" / "c5" / f"{t:03d}.png")
            video = "clips/c5"
        else:
            video = f"clips/c{i}.mp4"
            write_video(root / video, frames)
        rows.append((video, PATIENTS[i], " ".join(map(str, CAPTION_COLOURS[i]))))
    (root / "clips" / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(2000))
    write_empty_video(root / "clips" / "empty.mp4")
    rows.insert(2, ("clips/corrupt.mp4", "p1", "1 2 3"))
    rows.append(("clips/empty.mp4", "p2", "4 5 6"))
    lines = ["video,patient_id,report"] + [",".join(row) for row in rows]
    (root / "echo.csv").write_text("\n".join(lines) + "\n")
    return root / "echo.csv"


def test_same_subject_on_a_table_is_the_auroc_of_the_pair_cosines(echo_table):
    task = SameSubjectTask(table=str(echo_table), group_column="patient_id", frames=4)
    with pytest.warns(UserWarning, match="skipped 2 of 8 videos"):
        [evaluator] = task.build(colour_context())
    results = evaluate(MeanColour(), [evaluator])
    assert results["same_subject/skipped"] == 2.0
    got = results["same_subject/auroc"]
    # independently: the cosine of the written colours (normalised as the model's input) of every pair
    embedded = torch.nn.functional.normalize(normalised(COLOURS), dim=-1).numpy()
    i, j = np.triu_indices(len(COLOURS), k=1)
    expected = roc_auc_score(np.array(PATIENTS)[i] == np.array(PATIENTS)[j], (embedded[i] * embedded[j]).sum(-1))
    assert 0.6 < expected < 0.95  # neither perfect nor chance: the test can fail
    assert got == pytest.approx(expected, abs=1e-12)
    details = evaluator.details()
    assert details["pairs"] == 15 and details["positives"] == 3 and details["clips"] == 6 and details["rows"] == 8
    assert details["skipped"] == {"video_corrupt": 1, "video_empty": 1}
    assert details["skipped_rows"] == [f"{echo_table} line 4: video_corrupt", f"{echo_table} line 9: video_empty"]
    # n caps the rows read: the first 3 (one of them corrupt) leave 2 clips of one patient
    with pytest.raises(ConfigError, match="every clip is in one group"), pytest.warns(UserWarning):
        SameSubjectTask(table=str(echo_table), group_column="patient_id", frames=4, n=3).build(colour_context())


def test_video_retrieval_on_a_parquet_table_of_video_bytes(echo_table, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [line.split(",") for line in echo_table.read_text().splitlines()[1:]]
    rows = [row for row in rows if row[0] != "clips/c5"]  # the video files' bytes (a frame folder has none)
    path = tmp_path / "echo.parquet"
    blobs = [(echo_table.parent / video).read_bytes() for video, _, _ in rows]
    pq.write_table(pa.table({"clip": blobs, "report": [report for _, _, report in rows]}), path)
    task = VideoRetrievalTask(table=str(path), video_column="clip", caption_column="report", frames=4, ks=[1, 2])
    with pytest.warns(UserWarning, match="skipped 2 of 7"):
        [evaluator] = task.build(colour_context())
    results = evaluate(MeanColour(), [evaluator])
    good = [k for k in range(len(COLOURS)) if k != 5]  # the frame folder is not in the bytes table
    scores = (normalised([COLOURS[k] for k in good]) @ normalised([CAPTION_COLOURS[k] for k in good]).T).numpy()
    i2t = float((scores.argmax(1) == np.arange(len(good))).mean())
    t2i = float((scores.argmax(0) == np.arange(len(good))).mean())
    assert i2t < 1 and t2i < 1
    assert results["video_retrieval/image_to_text/R@1"] == pytest.approx(i2t)
    assert results["video_retrieval/text_to_image/R@1"] == pytest.approx(t2i)
    assert results["video_retrieval/mean_R@1"] == pytest.approx((i2t + t2i) / 2)
    assert results["video_retrieval/skipped"] == 2.0
    details = evaluator.details()
    assert details["kind"] == "retrieval" and details["clips"] == 5
    assert details["skipped"] == {"bad_image": 1, "video_empty": 1}  # random bytes are no video container


def test_video_tables_name_the_missing_file_and_column(echo_table, tmp_path):
    context = colour_context()
    with pytest.raises(ConfigError, match=r"same_subject\.table: table not found: .*nowhere\.csv"):
        SameSubjectTask(table=str(tmp_path / "nowhere.csv")).build(context)
    with pytest.raises(ConfigError, match=r"echo\.csv: no column 'group' \(same_subject\.group_column\)"):
        SameSubjectTask(table=str(echo_table)).build(context)
    with pytest.raises(ConfigError, match=r"echo\.csv: no column 'caption' \(video_retrieval\.caption_column\)"):
        VideoRetrievalTask(table=str(echo_table)).build(context)
    with pytest.raises(ConfigError, match=r"echo\.csv: no column 'clip' \(video_retrieval\.video_column\)"):
        VideoRetrievalTask(table=str(echo_table), video_column="clip", caption_column="report").build(context)
    bad = tmp_path / "bad.csv"
    bad.write_text("video,group\nclips/none.mp4,a\n,b\n")
    with pytest.raises(ConfigError, match=r"bad\.csv: 0 usable clip\(s\) of 2 rows.*missing_file 1, no_video 1"):
        SameSubjectTask(table=str(bad)).build(context)
    with pytest.raises(ValueError, match="caption_column only apply with a table"):
        VideoRetrievalTask(caption_column="report")
    with pytest.raises(ValueError, match="subjects are for the motion world"):
        SameSubjectTask(table=str(echo_table), subjects=4)
    # a saved config lists every field at its default: it loads again
    assert SameSubjectTask(**SameSubjectTask().model_dump()) == SameSubjectTask()
