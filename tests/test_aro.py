"""ARO loaders and evaluator on small hand-made files in the released formats."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vislang.errors import DataError
from vislang.eval.aro import AroEvaluator, clean_caption, load_aro, order_perturbations, text_only_scores
from vislang.objectives import Objective


class RednessObjective(Objective):
    """Prefers the true caption (candidate 0) exactly when the image is mostly red."""

    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Linear(1, 1)

    def loss(self, batch):
        raise NotImplementedError

    def image_features(self, images):
        return images[:, 0].mean(dim=(1, 2))[:, None] - images[:, 2].mean(dim=(1, 2))[:, None]

    def text_features(self, tokens):
        return tokens.float()

    def scores(self, image_features, text_features):
        raise NotImplementedError

    def pair_scores(self, image_features, text_features):
        k = text_features.shape[1]
        red = image_features[:, 0] > 0
        scores = torch.zeros(len(image_features), k)
        scores[red, 0] = 1.0
        scores[~red, 1] = 1.0
        return scores


def tokenize(texts):
    return torch.zeros(len(texts), 4, dtype=torch.long)


@pytest.fixture
def vg_files(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    array = np.zeros((40, 40, 3), dtype=np.uint8)
    array[:, :20, 0] = 255  # left half red
    array[:, 20:, 2] = 255  # right half blue
    Image.fromarray(array).save(images / "scene.jpg")
    left = {"bbox_x": 0, "bbox_y": 0, "bbox_w": 18, "bbox_h": 40}
    right = {"bbox_x": 22, "bbox_y": 0, "bbox_w": 18, "bbox_h": 40}
    relation = [
        {"image_path": "scene.jpg", **box, "relation_name": name, "true_caption": t, "false_caption": f}
        for box, name, t, f in [
            (left, "on", "the dog is on the sofa", "the sofa is on the dog"),
            (left, "on", "the cup is on the table", "the table is on the cup"),
            (left, "under", "the cat is under the table", "the table is under the cat"),
            (right, "under", "the ball is under the chair", "the chair is under the ball"),
            (right, "under", "the shoe is under the bed", "the bed is under the shoe"),
        ]
    ]
    attribution = [
        {"image_path": "scene.jpg", **box, "attributes": attrs, "true_caption": "x", "false_caption": "y"}
        for box, attrs in [(left, ["red", "white"]), (right, ["red", "white"]), (left, ["big", "small"])]
    ]
    (tmp_path / "visual_genome_relation.json").write_text(json.dumps(relation))
    (tmp_path / "visual_genome_attribution.json").write_text(json.dumps(attribution))
    return tmp_path


def test_vg_relation_crops_and_macro_averages(vg_files):
    items = load_aro("vg_relation", vg_files / "visual_genome_relation.json", vg_files / "images")
    assert [i.group for i in items] == ["on", "on", "under", "under", "under"]
    assert items[0].captions == ("the dog is on the sofa", "the sofa is on the dog")
    evaluator = AroEvaluator("vg_relation", items, tokenize, 16, (0.5,) * 3, (0.25,) * 3, batch_size=2, min_group=1)
    out = evaluator(RednessObjective())
    assert out["aro/vg_relation/acc"] == pytest.approx(3 / 5)  # the left (red) crops are right
    assert out["aro/vg_relation/macro_acc"] == pytest.approx((1 + 1 / 3) / 2)
    assert out["aro/vg_relation/skipped"] == 0
    # word order alone gives the true caption away here: "is on the" follows "cup"/"dog" elsewhere
    assert "aro/vg_relation/text_only_macro_acc" in out


def test_vg_attribution_groups_by_attribute_pair_and_drops_small_groups(vg_files):
    items = load_aro("vg_attribution", vg_files / "visual_genome_attribution.json", vg_files / "images")
    assert [i.group for i in items] == ["red_white", "red_white", "big_small"]
    evaluator = AroEvaluator("vg_attribution", items, tokenize, 16, (0.5,) * 3, (0.25,) * 3, min_group=2)
    out = evaluator(RednessObjective())
    assert out["aro/vg_attribution/acc"] == pytest.approx(2 / 3)
    assert out["aro/vg_attribution/macro_acc"] == pytest.approx(0.5)  # only red_white has >= 2 items


def test_missing_images_are_skipped_and_counted(vg_files):
    data = json.loads((vg_files / "visual_genome_relation.json").read_text())
    data[0]["image_path"] = "missing.jpg"
    (vg_files / "broken.json").write_text(json.dumps(data))
    items = load_aro("vg_relation", vg_files / "broken.json", vg_files / "images")
    out = AroEvaluator("vg_relation", items, tokenize, 16, (0.5,) * 3, (0.25,) * 3, min_group=1)(RednessObjective())
    assert out["aro/vg_relation/skipped"] == 1


def test_bad_annotation_files_name_the_problem(vg_files):
    with pytest.raises(DataError, match="not found"):
        load_aro("vg_relation", vg_files / "nope.json", vg_files)
    data = json.loads((vg_files / "visual_genome_relation.json").read_text())
    del data[1]["false_caption"]
    (vg_files / "bad.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="item 1 has no key 'false_caption'"):
        load_aro("vg_relation", vg_files / "bad.json", vg_files)


def test_order_sets_build_five_candidates(tmp_path):
    annotations = [{"image": "val2014/a.jpg", "caption": ["A young man riding a red bike down the street.", "x y"]}]
    (tmp_path / "coco_karpathy_test.json").write_text(json.dumps(annotations))
    items = load_aro("coco_order", tmp_path / "coco_karpathy_test.json", tmp_path)
    assert len(items) == 2 and all(len(i.captions) == 5 for i in items)
    true = items[0].captions[0]
    assert true == "a young man riding a red bike down the street"
    assert items[0].image == tmp_path / "val2014" / "a.jpg"
    for candidate in items[0].captions[1:]:
        assert sorted(candidate.split()) == sorted(true.split())  # every perturbation reorders words


def test_order_perturbations_follow_aro():
    rng = np.random.default_rng(0)
    caption = "a young man riding a red bike"
    nouns_adj, others, within, across = order_perturbations(caption, rng)
    words = caption.split()
    # nouns (man, bike) and adjectives (young, red) move only among their own slots
    assert {nouns_adj.split()[i] for i in (2, 6)} == {"man", "bike"}
    assert {nouns_adj.split()[i] for i in (1, 5)} == {"young", "red"}
    assert [others.split()[i] for i in (1, 2, 5, 6)] == ["young", "man", "red", "bike"]
    trigrams = [words[i : i + 3] for i in range(0, len(words), 3)]
    got = within.split()
    assert [sorted(got[i : i + 3]) for i in range(0, len(got), 3)] == [sorted(t) for t in trigrams]
    assert any(across.split() == [w for t in order for w in t] for order in itertools.permutations(trigrams))
    assert clean_caption('A "Dog"; runs!  fast.') == "a dog runs fast"


def test_text_only_baseline_is_leave_one_out():
    from vislang.eval.aro import AroItem

    pairs = [("dog", "sofa"), ("dog", "bed"), ("cat", "sofa"), ("cat", "bed")]
    items = [AroItem(None, (f"the {a} is on the {b}", f"the {b} is on the {a}")) for a, b in pairs]
    scores = text_only_scores(items)
    assert (scores[:, 0] > scores[:, 1]).all()  # other items teach "the dog is", "on the sofa"
    alone = text_only_scores(items[:1])
    assert alone[0, 0] == pytest.approx(alone[0, 1])  # nothing but itself: no information


def test_eval_command_runs_aro_sets_from_config(vg_files, tiny_overrides, tmp_path):
    import subprocess
    import sys

    from vislang.experiment import build_config
    from vislang.train.loop import train

    cfg = build_config({}, tiny_overrides + ["train.steps=2", "train.eval_every=2", "train.checkpoint_every=2"])
    train(cfg, tmp_path / "run", quiet=True)
    aro = (
        f"eval.tasks=[{{type: zeroshot, n: 40}}, {{type: retrieval, n: 40}}, {{type: compositional, n: 20}}, "
        f"{{type: aro, kind: vg_relation, annotations: '{vg_files / 'visual_genome_relation.json'}', "
        f"images: '{vg_files / 'images'}', min_group: 1}}]"
    )
    out = tmp_path / "eval.json"
    command = [sys.executable, "-m", "vislang.cli", "eval", str(tmp_path / "run"), "--set", aro, "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert 0 <= metrics["aro/vg_relation/macro_acc"] <= 1 and "aro/vg_relation/text_only_macro_acc" in metrics
    bad = aro.replace("visual_genome_relation.json", "missing.json")
    result = subprocess.run(command[:5] + ["--set", bad], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "missing.json" in result.stderr and "Traceback" not in result.stderr
