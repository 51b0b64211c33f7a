"""LaBo: the selection score and its greedy choice on hand-made cases, concept cleaning, the
bottleneck's initialisation and fit, and both commands end to end on a tiny untrained model."""

from __future__ import annotations

import functools
import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY, export_untrained
from vislang.adapt.labo import association_init, bottleneck_columns, clean_concepts, fit_bottleneck
from vislang.adapt.labo_select import (
    class_similarity,
    coverage_similarity,
    greedy_select,
    labo_score,
    mutual_information,
    select_concepts,
)
from vislang.errors import DataError

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


def reference_mi(sim: np.ndarray) -> np.ndarray:
    """LaBo's ``mi_score`` (select_algo.py) written out concept by concept in plain numpy."""
    m, n = sim.shape
    out = np.zeros(m)
    for c in range(m):
        for y in range(n):
            p_cy = sim[c, y] / (sim[:, y].sum() * n)
            p_c = sum(sim[c, z] / (sim[:, z].sum() * n) for z in range(n))
            out[c] += p_cy * math.log(p_cy / (p_c * (1 / n)))
    return out


def reference_score(chosen, images, labels, text, owner, cls, alpha, beta) -> float:
    """F(C) for class ``cls`` as LaBo's submodular_select scores it: alpha * the chosen concepts'
    MI (over all candidates) plus beta * apricot's facility location with cos² similarity."""
    n = labels.max() + 1
    sim = np.array([[np.mean([text[c] @ images[i] for i in np.flatnonzero(labels == y)]) for y in range(n)]
                    for c in range(len(text))])  # fmt: skip
    mi = reference_mi(sim)
    own = np.flatnonzero(owner == cls)
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    coverage = sum(max(0.0, max((unit[c1] @ unit[own[j]]) ** 2 for j in chosen)) for c1 in own)
    return alpha * sum(mi[own[j]] for j in chosen) + beta * coverage


def test_mutual_information_by_hand():
    # two classes, two concepts: sim [[0.8, 0.2], [0.2, 0.2]]; column sums 1.0 and 0.4
    # p(c, y) = sim / (2 * colsum) = [[0.4, 0.25], [0.1, 0.25]], p(c) = [0.65, 0.35], p(y) = 1/2
    sim = torch.tensor([[0.8, 0.2], [0.2, 0.2]])
    expected = [0.4 * math.log(0.4 / 0.325) + 0.25 * math.log(0.25 / 0.325),
                0.1 * math.log(0.1 / 0.175) + 0.25 * math.log(0.25 / 0.175)]  # fmt: skip
    assert mutual_information(sim).tolist() == pytest.approx(expected, rel=1e-6)
    assert mutual_information(sim).tolist() == pytest.approx(reference_mi(sim.numpy().astype(float)), rel=1e-6)
    # a concept whose similarities follow the classes' totals over all candidates carries no
    # information (here both rows do); non-positive cosines stay finite
    assert mutual_information(torch.tensor([[0.3, 0.1], [0.9, 0.3]])).tolist() == pytest.approx([0.0, 0.0], abs=1e-7)
    assert torch.isfinite(mutual_information(torch.tensor([[0.5, -0.2], [0.0, 0.4]]))).all()


def test_score_matches_the_reference_formula_on_a_made_case():
    g = np.random.default_rng(3)
    images = g.normal(size=(9, 4)) + 2.0  # positive similarities, as CLIP's are
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    text = g.normal(size=(7, 4)) + 2.0
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    owner = np.array([0, 0, 0, 0, 1, 1, 2])
    sim = class_similarity(torch.tensor(images).float(), torch.tensor(labels), torch.tensor(text).float(), 3)
    disc = mutual_information(sim)
    block = torch.tensor(text[:4]).float()
    for chosen, alpha, beta in (([0], 1e7, 1.0), ([1, 3], 1e7, 1.0), ([0, 2, 3], 1e3, 15.0), ([2], 1.0, 0.0)):
        expected = reference_score(chosen, images, labels, text, owner, 0, alpha, beta)
        got = labo_score(chosen, disc[:4], coverage_similarity(block), alpha, beta)
        assert got == pytest.approx(expected, rel=1e-4)


def test_greedy_prefers_diverse_over_redundant():
    # first pick: gains 2.4, 2.3, 1.1 -> 0; then 1 adds 0.4 + 0.1, 2 adds 0.1 + 1.0 -> 2
    assert greedy_select(DISC, PHI, 2, alpha=1.0) == [0, 2]
    # without coverage the two most discriminative are chosen, redundant or not
    assert greedy_select(DISC, PHI, 2, alpha=1.0, beta=0.0) == [0, 1]
    assert greedy_select(DISC, PHI, 5) == [0, 1, 2]


def random_case(g: torch.Generator, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A class's made-up MI scores (of the order LaBo's take, ~1/M) and cos² similarities."""
    feats = torch.randn(m, 4, generator=g)
    return torch.rand(m, generator=g) * 1e-7, coverage_similarity(feats)


def test_greedy_against_brute_force_on_random_cases():
    g = torch.Generator().manual_seed(0)
    for case in range(30):
        disc, phi = random_case(g, 7)
        alpha, beta = 1e7, (0.1, 1.0, 15.0)[case % 3]
        score = functools.partial(labo_score, disc=disc, phi=phi, alpha=alpha, beta=beta)
        chosen = greedy_select(disc, phi, 3, alpha, beta)
        assert len(set(chosen)) == 3
        best = max(score(s) for s in itertools.combinations(range(7), 3))
        assert score(chosen) >= (1 - 1 / math.e) * best - 1e-6
        # one pick is the exact best single concept, and the greedy order is the marginal-gain order
        assert score(chosen[:1]) == pytest.approx(max(score([j]) for j in range(7)))
        for step in range(1, 3):
            gains = {j: score(chosen[:step] + [j]) for j in range(7) if j not in chosen[:step]}
            assert score(chosen[: step + 1]) == pytest.approx(max(gains.values()))
        # without coverage the score is modular: greedy is exactly the brute-force best
        modular = max(labo_score(s, disc, phi, alpha, 0.0) for s in itertools.combinations(range(7), 3))
        assert labo_score(greedy_select(disc, phi, 3, alpha, 0.0), disc, phi, alpha, 0.0) == pytest.approx(modular)


def test_class_similarity_by_hand():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    concepts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sim = class_similarity(images, labels, concepts, 2)
    # concept 0: class 0 mean 1.0, class 1 mean (0 + 0.6)/2; concept 1: 0.0 and (1 + 0.8)/2
    assert torch.allclose(sim, torch.tensor([[1.0, 0.3], [0.0, 0.9]]))
    assert torch.allclose(coverage_similarity(concepts * 3.0), torch.eye(2))


def test_select_concepts_keeps_the_concept_its_class_shows():
    # class a's images lie along e0: "seen" (e0) tells the classes apart best; "unseen" matches
    # class b's images, as b's own "other" does, so it carries half the information
    concepts = {"a": ["unseen", "seen"], "b": ["other"]}
    text = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    images, labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    chosen = select_concepts(concepts, ["a", "b"], text, images, labels, k=1, beta=0.0)
    assert chosen == {"a": ["seen"], "b": ["other"]}
    with pytest.raises(DataError):
        select_concepts(concepts, ["a", "b"], text[:2], images, labels, k=1)


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
