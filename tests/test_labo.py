"""LaBo: the selection score and its greedy choice on hand-made cases, concept cleaning, the
bottleneck's initialisation and fit, and both commands end to end on a tiny untrained model."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import TINY, export_untrained
from vislang.adapt.labo import association_init, bottleneck_columns, clean_concepts, fit_bottleneck
from vislang.adapt.labo_select import class_similarity, discriminability, greedy_select, labo_score, select_concepts

# Three candidates: 0 and 1 near-copies (φ = 0.9), 2 unlike both; 1 is more discriminative than 2.
DISC = torch.tensor([0.5, 0.4, 0.1])
PHI = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]])


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislang.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)  # fmt: skip


def test_score_by_hand():
    # F({0, 2}) = (0.5 + 0.1) + (max(1, 0) + max(0.9, 0) + max(0, 1)) = 0.6 + 2.9
    assert labo_score([0, 2], DISC, PHI, 1.0, 1.0) == pytest.approx(3.5)
    assert labo_score([0, 1], DISC, PHI, 1.0, 1.0) == pytest.approx(0.9 + 2.0)
    assert labo_score([1], DISC, PHI, 2.0, 0.5) == pytest.approx(0.8 + 0.5 * 1.9)
    assert labo_score([], DISC, PHI, 1.0, 1.0) == 0.0


def test_greedy_prefers_diverse_over_redundant():
    # first pick: gains 2.4, 2.3, 1.1 -> 0; then 1 adds 0.4 + 0.1, 2 adds 0.1 + 1.0 -> 2
    assert greedy_select(DISC, PHI, 2) == [0, 2]
    # without coverage the two most discriminative are chosen, redundant or not
    assert greedy_select(DISC, PHI, 2, beta=0.0) == [0, 1]
    assert greedy_select(DISC, PHI, 5) == [0, 1, 2]


def test_greedy_is_within_its_guarantee_on_random_cases():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        feats = torch.nn.functional.normalize(torch.randn(7, 4, generator=g), dim=1)
        disc, phi = torch.rand(7, generator=g), feats @ feats.T
        best = max(labo_score(s, disc, phi, 1.0, 1.0) for s in itertools.combinations(range(7), 3))
        assert labo_score(greedy_select(disc, phi, 3), disc, phi, 1.0, 1.0) >= (1 - 1 / math.e) * best - 1e-6


def test_class_similarity_and_discriminability_by_hand():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    concepts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sim = class_similarity(images, labels, concepts, 2)
    # concept 0: class 0 mean 1.0, class 1 mean (0 + 0.6)/2; concept 1: 0.0 and (1 + 0.8)/2
    assert torch.allclose(sim, torch.tensor([[1.0, 0.3], [0.0, 0.9]]))
    disc = discriminability(sim, torch.tensor([0, 0]), tau=0.1)
    assert disc[0] == pytest.approx(1 / (1 + math.exp(-7.0)), rel=1e-5)
    assert disc[1] == pytest.approx(1 / (1 + math.exp(9.0)), rel=1e-4)


def test_select_concepts_keeps_the_concept_its_class_shows():
    # class a's images lie along e0: "seen" (e0) is discriminative, "unseen" (e1, class b's direction) is not
    concepts = {"a": ["seen", "unseen"], "b": ["other"]}
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    images, labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    chosen = select_concepts(concepts, ["a", "b"], text, images, labels, k=1, beta=0.0)
    assert chosen == {"a": ["seen"], "b": ["other"]}


def test_clean_concepts():
    answers = ['- Three corners\n2. flat base.\n\n"pointed top"', "three corners\nthe triangle's tip\n" + "word " * 9]
    assert clean_concepts(answers, "triangle") == ["three corners", "flat base", "pointed top"]


def test_association_init_and_columns():
    columns, owners = bottleneck_columns({"a": ["x", "y"], "b": ["y", "z"]}, ["a", "b"])
    assert columns == ["x", "y", "z"] and owners == [[0], [0, 1], [1]]
    assert torch.equal(association_init(owners, 2, 2.0), torch.tensor([[2.0, 2.0, 0.0], [0.0, 2.0, 2.0]]))


def test_fit_bottleneck_learns_and_keeps_init_without_steps():
    init = torch.eye(2)
    x = torch.tensor([[-1.0, 0.5], [-0.8, 0.3], [1.0, -0.2], [0.9, -0.4]])  # the init's concepts point the wrong way
    y = torch.tensor([0, 0, 1, 1])
    assert torch.equal(fit_bottleneck(x, y, init, steps=0), init)
    weight = fit_bottleneck(x, y, init, steps=200, lr=0.1)
    assert torch.equal((x @ weight.T).argmax(dim=1), y)


@pytest.fixture
def tiny_model(tmp_path):
    from vislang.experiment import build_config

    texts = ["a red circle", "a blue square", "a green triangle", "a photo of a star", "four corners"] * 10
    return export_untrained(build_config({}, TINY), texts, tmp_path / "model")


def test_commands_end_to_end(tmp_path, tiny_model):
    out = tmp_path / "concepts.json"
    first = cli("labo", "concepts", "world:shape", "--backend", "world", "--out", str(out))
    assert first.returncode == 0, first.stderr
    data, text = json.loads(out.read_text()), out.read_bytes()
    assert list(data) == ["circle", "square", "triangle", "diamond", "cross", "star"]
    assert "three corners" in data["triangle"] and "no corners" in data["circle"]
    again = cli("labo", "concepts", "world:shape", "--out", str(out))
    assert again.returncode == 0 and "18 prompts from the cache" in again.stdout and out.read_bytes() == text
    run = cli("labo", "train", tiny_model, "--concepts", str(out), "--shots", "2", "--steps", "20",
              "--n-train", "60", "--n-test", "30", "--out", str(tmp_path / "labo"))  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "labo" / "labo.json").read_text())
    assert len(result["weight"]) == 6 and len(result["weight"][0]) == len(result["concepts"])
    assert 0.0 <= result["accuracy"] <= 1.0 and "**triangle**" in (tmp_path / "labo" / "labo.md").read_text()


def test_train_refuses_a_concepts_file_without_a_class(tmp_path, tiny_model):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"circle": ["round outline"]}))
    result = cli("labo", "train", tiny_model, "--concepts", str(bad), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "'square'" in result.stderr


def test_labo_and_gist_run_on_an_imagefolder(tmp_path, tiny_model):
    from PIL import Image, ImageDraw

    for split, n in (("train", 8), ("test", 4)):
        for name in ("circle", "square"):
            (tmp_path / "shapes" / split / name).mkdir(parents=True)
            for i in range(n):
                image = Image.new("RGB", (60 + i, 50), (10, 10, 10))
                box = (10, 10, 40 + i, 40)
                (ImageDraw.Draw(image).ellipse if name == "circle" else ImageDraw.Draw(image).rectangle)(
                    box, fill=(200, 30, 30)
                )
                image.save(tmp_path / "shapes" / split / name / f"{i}.png")
    task = f"imagefolder:{tmp_path / 'shapes'}"
    concepts = tmp_path / "concepts.json"
    made = cli("labo", "concepts", task, "--backend", "world", "--out", str(concepts))
    assert made.returncode == 0, made.stderr
    assert list(json.loads(concepts.read_text())) == ["circle", "square"]  # the class folders, sorted
    run = cli("labo", "train", tiny_model, "--concepts", str(concepts), "--task", task, "--shots", "2", "--steps", "5",
              "--out", str(tmp_path / "labo"))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(json.loads((tmp_path / "labo" / "labo.json").read_text())["weight"]) == 2
    fine = tmp_path / "fine.json"
    assert cli("gist", "describe", task, "--backend", "world", "--out", str(fine)).returncode == 0
    matched = cli("gist", "match", tiny_model, "--descriptions", str(fine), "--task", task, "--n-images", "10",
                  "--out", str(tmp_path / "matched.parquet"))  # fmt: skip
    assert matched.returncode == 0, matched.stderr
    missing = cli("labo", "train", tiny_model, "--concepts", str(concepts), "--task", f"imagefolder:{tmp_path / 'none'}",
                  "--out", str(tmp_path / "x"))  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
