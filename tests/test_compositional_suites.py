"""SugarCrepe and Winoground in their published file formats, with blind baselines beside every score."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vislang.config import WorldConfig
from vislang.data.benchmark.sugarcrepe import TYPES, read_sugarcrepe
from vislang.data.benchmark.winoground import read_winoground
from vislang.errors import ConfigError, DataError
from vislang.eval.blind import EOS, UNK, NgramLM, read_corpus, text_tower_plausibility, words
from vislang.eval.encode import FeatureCache
from vislang.eval.sugarcrepe import SugarCrepeTask
from vislang.eval.tasks import EvalContext
from vislang.eval.winoground import WinogroundTask, group_credit
from vislang.experiment import build_config, build_objective
from vislang.objectives.contrastive import EmbeddingObjective

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


class Lookup:
    """Tokenizer of known texts: a text's token is its row in ``table``."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.index, self.table = {t: i for i, t in enumerate(vectors)}, torch.tensor(list(vectors.values()))

    def __call__(self, texts):
        return torch.tensor([[self.index[t]] for t in texts])


class ColourModel(torch.nn.Module):
    """Image embedding: one-hot dominant colour; text embedding: the vector the test chose; so
    under the real two-tower scoring (dot product) s(text, image of colour c) = vector[c] exactly."""

    def __init__(self, lookup: Lookup) -> None:
        super().__init__()
        self.table, self.unused = lookup.table, torch.nn.Linear(1, 1)

    def encode_image(self, images):
        return torch.nn.functional.one_hot(images.mean(dim=(2, 3)).argmax(dim=1), 3).float()

    def encode_text(self, tokens):
        return self.table[tokens[:, 0]]


def colour_objective(lookup: Lookup) -> EmbeddingObjective:
    return EmbeddingObjective(ColourModel(lookup))


def context(tokenizer, batch_size: int = 2) -> EvalContext:
    return EvalContext(tokenizer, 16, (0.5,) * 3, (0.5,) * 3, batch_size, 0, WorldConfig(), lambda source: None)


def credit(right: float, wrong: float) -> float:
    return 1.0 if right > wrong else 0.5 if right == wrong else 0.0


def typicality(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ (unit.mean(axis=0) / np.linalg.norm(unit.mean(axis=0)))


CASES = [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.8, 0.2)]  # (positive, negative) score with the item's image


def write_sugarcrepe(tmp_path, types=TYPES):
    """The release's folder (one <type>.json each) and COCO-named JPEGs; returns the plan."""
    (images := tmp_path / "val2017").mkdir()
    for c, colour in enumerate(COLOURS):
        Image.new("RGB", (20, 14), colour).save(images / f"{c + 1:012d}.jpg", quality=95)
    root = tmp_path / "sugar-crepe" / "data"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    plan, vectors = {}, {}
    for j, name in enumerate(types):
        rows, data = [], {}
        for i in range(2 + j % 3):
            colour, (p, n) = (i + j) % 3, CASES[(i + j) % 4]
            item_id = str(100 * j + 7 * i)  # ids need not be contiguous
            positive, negative = f"a {name} caption {i}", f"a {name} negative {i}"
            for text, score in ((positive, p), (negative, n)):
                vector = rng.uniform(0.1, 1.0, 3)
                vector[colour] = score
                vectors[text] = vector.tolist()
            data[item_id] = {"filename": f"{colour + 1:012d}.jpg", "caption": positive, "negative_caption": negative}
            rows.append((item_id, colour, positive, negative, p, n))
        (root / f"{name}.json").write_text(json.dumps(data))
        plan[name] = rows
    return root, images, plan, vectors


def test_sugarcrepe_reader_and_its_errors_naming_the_file(tmp_path):
    root, images, plan, _ = write_sugarcrepe(tmp_path)
    items = read_sugarcrepe(root, images)
    assert list(items) == list(TYPES)
    for name, rows in plan.items():
        assert [it.id for it in items[name]] == [r[0] for r in rows]
        expected = [(f"{r[1] + 1:012d}.jpg", r[2], r[3]) for r in rows]
        assert [(it.image.name, it.positive, it.negative) for it in items[name]] == expected
    few = read_sugarcrepe(root, images, types=["swap_att", "add_obj"], n=1)
    assert list(few) == ["swap_att", "add_obj"] and [len(v) for v in few.values()] == [1, 1]
    (root / "replace_rel.json").unlink()
    with pytest.raises(DataError, match=r"SugarCrepe file not found: .*replace_rel\.json"):
        read_sugarcrepe(root, images)
    assert "replace_rel" not in read_sugarcrepe(root, images, types=["replace_obj", "add_att"])
    broken = [
        ('{"1": {"filename": "000000000001.jpg", "caption": "a cat"}}', "item '1' has no key 'negative_caption'"),
        ('{"1": {"filename": "a.jpg", "caption": "", "negative_caption": "x"}}', "item '1': 'caption' must be"),
        ('[{"filename": "x.jpg"}]', "expected a JSON object"),
        ('{"1": {"filename": ', "not valid JSON"),
    ]
    for text, problem in broken:
        (root / "add_att.json").write_text(text)
        with pytest.raises(DataError, match=rf"add_att\.json: {problem}"):
            read_sugarcrepe(root, images, types=["add_att"])
    (images / "000000000002.jpg").unlink()
    with pytest.raises(DataError, match=r"SugarCrepe image not found: .*000000000002\.jpg"):
        read_sugarcrepe(root, images, types=["replace_obj", "swap_obj"])
    with pytest.raises(ConfigError, match="unknown SugarCrepe type 'replace_colour'"):
        read_sugarcrepe(root, images, types=["replace_colour"])
    with pytest.raises(Exception, match="replace_colour"):
        SugarCrepeTask(root=str(root), images=str(images), types=["replace_colour"])


def test_sugarcrepe_scores_per_type_with_blind_baselines_beside(tmp_path):
    root, images, plan, vectors = write_sugarcrepe(tmp_path)
    corpus = tmp_path / "captions.txt"
    corpus.write_text("a dog on a couch\na cat caption on a mat\n\na replace_obj caption\n")
    lookup = Lookup(vectors)
    task = SugarCrepeTask(root=str(root), images=str(images), corpus=str(corpus), ngram_order=2)
    [evaluator] = task.build(context(lookup))
    metrics = evaluator(colour_objective(lookup), FeatureCache())
    texts = [t for rows in plan.values() for r in rows for t in (r[2], r[3])]
    blind = dict(zip(texts, typicality(np.array([vectors[t] for t in texts]))))
    lm = NgramLM(read_corpus(corpus), 2)
    for name, rows in plan.items():
        assert metrics[f"sugarcrepe/{name}/acc"] == pytest.approx(np.mean([credit(r[4], r[5]) for r in rows]))
        text = np.mean([credit(blind[r[2]], blind[r[3]]) for r in rows])
        assert metrics[f"sugarcrepe/{name}/blind_text/acc"] == pytest.approx(text)
        ngram = np.mean([credit(lm.score(r[2]), lm.score(r[3])) for r in rows])
        assert metrics[f"sugarcrepe/{name}/blind_ngram/acc"] == pytest.approx(ngram)
    for prefix in ("", "blind_text/", "blind_ngram/"):
        means = [metrics[f"sugarcrepe/{name}/{prefix}acc"] for name in TYPES]
        assert metrics[f"sugarcrepe/mean/{prefix}acc"] == pytest.approx(np.mean(means))
    model = [k for k in metrics if "blind" not in k]
    assert len(model) == 8 and len(metrics) == 3 * len(model)  # both blind scores beside every model score


def test_ties_get_half_credit_never_the_models_favour(tmp_path):
    root, images, _, vectors = write_sugarcrepe(tmp_path, types=("swap_obj",))
    lookup = Lookup({t: [0.3, 0.3, 0.3] for t in vectors})  # every caption scores the same with every image
    [evaluator] = SugarCrepeTask(root=str(root), images=str(images), types=["swap_obj"]).build(context(lookup))
    metrics = evaluator(colour_objective(lookup), FeatureCache())
    names = [f"sugarcrepe/{t}/{p}acc" for t in ("swap_obj", "mean") for p in ("", "blind_text/")]
    assert metrics == pytest.approx(dict.fromkeys(names, 0.5))


# (collapsed tag, colours of image 0 and 1, scores [[s(i0,c0), s(i0,c1)], [s(i1,c0), s(i1,c1)]], text, image, group)
EXAMPLES = [
    ("Object", (0, 1), [[1.0, 0.0], [0.0, 1.0]], 1.0, 1.0, 1.0),
    ("Relation", (1, 2), [[1.0, 0.0], [1.0, 0.0]], 0.0, 0.25, 0.0),
    ("Both", (2, 0), [[0.5, 0.5], [0.5, 0.5]], 0.25, 0.25, 1 / 6),
    ("Object", (0, 2), [[0.9, 0.9], [0.2, 0.95]], 0.5, 1.0, 0.5),
]


def write_winoground(tmp_path, examples=EXAMPLES):
    root = tmp_path / "winoground"
    (root / "images").mkdir(parents=True)
    lines, vectors = [], {}
    rng = np.random.default_rng(1)
    for k, (tag, (a, b), s, *_) in enumerate(examples):
        for i, colour in enumerate((a, b)):
            Image.new("RGB", (12, 18), COLOURS[colour]).save(root / "images" / f"ex_{k}_img_{i}.png")
        captions = [f"the {k} thing left of a box", f"a box left of the {k} thing"]
        for c, caption in enumerate(captions):
            vector = rng.uniform(0.1, 1.0, 3)
            vector[a], vector[b] = s[0][c], s[1][c]
            vectors[caption] = vector.tolist()
        record = {"id": k, "caption_0": captions[0], "caption_1": captions[1], "tag": "Noun", "secondary_tag": "",
                  "num_main_preds": 1 + k % 2, "collapsed_tag": tag, "image_0": f"ex_{k}_img_0",
                  "image_1": f"ex_{k}_img_1"}  # fmt: skip
        lines.append(json.dumps(record))
    (root / "examples.jsonl").write_text("\n".join(lines) + "\n")
    return root, vectors


def test_winoground_reader_reads_examples_and_tags(tmp_path):
    root, _ = write_winoground(tmp_path)
    items = read_winoground(root)
    assert [it.id for it in items] == [0, 1, 2, 3]
    assert [it.collapsed_tag for it in items] == ["Object", "Relation", "Both", "Object"]
    assert [it.num_main_preds for it in items] == [1, 2, 1, 2]
    assert items[1].images == (root / "images" / "ex_1_img_0.png", root / "images" / "ex_1_img_1.png")
    assert items[3].captions == ("the 3 thing left of a box", "a box left of the 3 thing")
    assert len(read_winoground(root, n=2)) == 2


def test_winoground_bad_lines_name_file_and_line(tmp_path):
    root, _ = write_winoground(tmp_path)
    path = root / "examples.jsonl"
    good = path.read_text().splitlines()
    record = {k: v for k, v in json.loads(good[3]).items() if k != "collapsed_tag"}
    broken = [
        ('{"id": 3, "caption_0": ', "line 4: not a JSON record"),
        (json.dumps(record), "line 4: no key 'collapsed_tag'"),
        (good[3].replace('"Object"', '"Colour"'), "line 4: collapsed_tag 'Colour'"),
        (
            good[3].replace('"num_main_preds": 2', '"num_main_preds": "2"'),
            "line 4: 'num_main_preds' must be an integer",
        ),
        (good[0], "line 4: id 0 already used on line 1"),
    ]
    for line, problem in broken:
        path.write_text("\n".join(good[:3] + [line]))  # the last line too: the published set has no torn tail
        with pytest.raises(DataError, match=rf"examples\.jsonl: {problem}"):
            read_winoground(root)
    path.write_text("\n".join(good))
    (root / "images" / "ex_2_img_1.png").unlink()
    with pytest.raises(DataError, match=r"Winoground image not found: .*images/ex_2_img_1\.png"):
        read_winoground(root)
    with pytest.raises(DataError, match=r"examples file not found: .*examples\.jsonl"):
        read_winoground(tmp_path)


def test_winoground_text_image_group_overall_and_per_tag(tmp_path):
    root, vectors = write_winoground(tmp_path)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('"the 0 thing left of a box"\n{"caption": "a box left of the 1 thing"}\n')
    lookup = Lookup(vectors)
    [evaluator] = WinogroundTask(root=str(root), corpus=str(corpus)).build(context(lookup, batch_size=3))
    metrics = evaluator(colour_objective(lookup), FeatureCache())
    for j, name in enumerate(("text", "image", "group"), start=3):
        assert metrics[f"winoground/{name}"] == pytest.approx(np.mean([e[j] for e in EXAMPLES]))
        for tag in ("Object", "Relation", "Both"):
            expected = np.mean([e[j] for e in EXAMPLES if e[0] == tag])
            assert metrics[f"winoground/{tag.lower()}/{name}"] == pytest.approx(expected)
    captions = list(vectors)
    blind = typicality(np.array([vectors[c] for c in captions])).reshape(-1, 2)
    lm = NgramLM(read_corpus(corpus)).scores(captions).reshape(-1, 2)
    for prefix, scores in (("blind_text", blind), ("blind_ngram", lm)):
        # a blind scorer prefers one caption for both images: right for one, wrong for the other
        per_example = [credit(b0, b1) * credit(b1, b0) for b0, b1 in scores]
        assert metrics[f"winoground/{prefix}/text"] == pytest.approx(np.mean(per_example))
        assert metrics[f"winoground/object/{prefix}/text"] == pytest.approx(np.mean(per_example[::3]))
    # image 0 and image 1 pick the same caption: never (example 0), always caption 0 (example 1),
    # half the time (example 2, all tied), caption 1 half the time (example 3, image 0 tied)
    assert metrics["winoground/same_caption"] == pytest.approx((0 + 1 + 0.5 + 0.5) / 4)
    agreement = credit(*blind[1]) + 0.25 * (credit(*blind[2]) + credit(*blind[2][::-1])) + 0.5 * credit(*blind[3][::-1])
    assert metrics["winoground/blind_text/prior_agreement"] == pytest.approx(agreement / 4)
    model = [k for k in metrics if k.endswith("/text") and "blind" not in k]  # beside each: both blind scores
    beside = [k.replace("/text", f"/{p}/text") for k in model for p in ("blind_text", "blind_ngram")]
    assert len(model) == 4 and set(beside) <= set(metrics)


def test_group_credit_is_the_random_tie_break_expectation():
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.integers(0, 3, (200, 2, 2)).astype(np.float32))

    def brute(s):  # average over every priority order that breaks the ties
        flat, total = s.flatten().tolist(), 0
        for priority in itertools.permutations(range(4)):
            order = sorted(range(4), key=lambda i: (flat[i], priority[i]))
            rank = {i: r for r, i in enumerate(order)}
            total += rank[0] > rank[1] and rank[0] > rank[2] and rank[3] > rank[1] and rank[3] > rank[2]
        return total / 24

    assert group_credit(scores).tolist() == pytest.approx([brute(s) for s in scores])


CORPUS = ["A red dog runs.", "a red cat sleeps", "the dog chases a cat", "a cat chases the dog", "a red dog sleeps"]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_probabilities_sum_to_one_over_the_vocabulary(order):
    lm = NgramLM(CORPUS, order)
    assert lm.vocabulary == sorted({w for c in CORPUS for w in words(c)} | {EOS, UNK})
    contexts = [(), ("a",), ("a", "red"), ("red", "dog"), ("zebra", "quantum"), ("the", "zebra"), ("dog", "chases")]
    for history in contexts:
        probabilities = [lm.prob(w, history) for w in lm.vocabulary]
        assert min(probabilities) > 0
        assert math.fsum(probabilities) == pytest.approx(1.0, abs=1e-12)


def test_ngram_matches_kneser_ney_by_hand_and_prefers_seen_word_orders():
    lm = NgramLM(CORPUS, 2)
    sentences = [["<s>", *words(c), EOS] for c in CORPUS]
    bigrams = [(s[i], s[i + 1]) for s in sentences for i in range(len(s) - 1)]
    kinds = set(bigrams)
    vocabulary = {w for _, w in kinds} | {UNK}
    raw = [bigrams.count(k) for k in kinds]
    d2 = min(max(raw.count(1) / (raw.count(1) + 2 * raw.count(2)), 0.1), 0.9)
    cont = {w: len({v for v, x in kinds if x == w}) for w in vocabulary}
    cont_counts = [c for c in cont.values() if c]
    n1, n2 = cont_counts.count(1), cont_counts.count(2)
    d1 = min(max(n1 / (n1 + 2 * n2), 0.1), 0.9)
    assert lm.discounts[1] == pytest.approx(d1)

    def p1(w):
        return max(cont[w] - d1, 0) / len(kinds) + d1 * len(cont_counts) / len(kinds) / len(vocabulary)

    after_red = [w for v, w in bigrams if v == "red"]  # dog, cat, dog
    for w in ("dog", "cat", "sleeps", UNK):
        by_hand = max(after_red.count(w) - d2, 0) / 3 + d2 * 2 / 3 * p1(w)
        assert lm.prob(w, ["a", "red"]) == pytest.approx(by_hand)
    assert lm.prob("dog", ["never-seen"]) == pytest.approx(p1("dog"))  # unseen context: the lower order
    lm = NgramLM(CORPUS, 3)  # a seen word order beats the swapped one; a caption's score is its mean
    assert lm.score("a red dog runs") > lm.score("a dog red runs")
    assert lm.score("the dog chases a cat") > lm.score("dog the a chases cat")
    tokens = words("a red dog runs") + [EOS]
    total = sum(math.log(lm.prob(t, tokens[:i])) for i, t in enumerate(tokens))
    assert lm.score("A red dog, runs!") == pytest.approx(total / len(tokens))  # mean, not sum


def test_corpus_formats_and_errors(tmp_path):
    coco = json.dumps({"images": [], "annotations": [{"id": 1, "caption": "a cat"}]})
    files = {"c.txt": "a dog\n\na cat\n", "c.jsonl": '"a dog"\n{"caption": "a cat"}\n{"text": "a cow"}\n',
             "c.json": json.dumps(["a dog", {"caption": "a cat"}]), "coco.json": coco}  # fmt: skip
    expected = {"c.txt": ["a dog", "a cat"], "c.jsonl": ["a dog", "a cat", "a cow"], "c.json": ["a dog", "a cat"]}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        assert read_corpus(tmp_path / name) == expected.get(name, ["a cat"])
    bad = {"bad.jsonl": ('"a dog"\n{"caption": 3}\n', "line 2"), "torn.jsonl": ('"a dog"\n{"capt\n', "line 2"),
           "empty.txt": ("\n\n", "the caption corpus has no captions"), "list.json": ("{}", "expected a JSON list")}  # fmt: skip
    for name, (text, problem) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=rf"{name}: .*{problem}|{name}: {problem}"):
            read_corpus(tmp_path / name)
    with pytest.raises(DataError, match=r"caption corpus not found: .*missing\.txt"):
        read_corpus(tmp_path / "missing.txt")


VOCAB, PAD, SOT, EOT = 40, 0, 1, 2
TEXTS = ["a red dog runs", "a dog red runs", "the cat sleeps on a mat", "a mat sleeps on the cat"]
VISION = {"image_size": 16, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}
SMALL_MODEL = {"embed_dim": 16, "vision": VISION, "text": {"width": 16, "heads": 2, "depth": 1, "context_length": 12}}


def word_tokens(texts):
    """SOT, one id per word, EOT, padding: enough for a tiny decoder."""
    out = torch.full((len(texts), 12), PAD)
    for row, text in enumerate(texts):
        ids = [3 + sum(map(ord, w)) % (VOCAB - 3) for w in words(text)][:10]
        out[row, : len(ids) + 2] = torch.tensor([SOT, *ids, EOT])
    return out


def small_objective(kind: str):
    objective = {"kind": kind} | ({"decoder": {"depth": 1, "n_queries": 4}} if kind == "coca" else {})
    objective |= {"decoder": {"depth": 1}} if kind == "cap" else {}
    torch.manual_seed(0)
    return build_objective(build_config({"model": SMALL_MODEL, "objective": objective}), VOCAB, PAD).eval()


def test_captioner_blind_score_is_its_likelihood_given_a_blank_image(tmp_path):
    cap = small_objective("cap")
    found = text_tower_plausibility(cap, FeatureCache(), TEXTS, word_tokens, 3, image_size=16)
    assert found.method == "blank_image_likelihood"
    with torch.no_grad():  # the objective's own scoring with a blank (mean-colour) image
        blank = cap.image_features(torch.zeros(1, 3, 16, 16)).expand(len(TEXTS), -1, -1)
        expected = cap.pair_scores(blank, cap.text_features(word_tokens(TEXTS))[:, None])[:, 0]
    assert found.scores.tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert text_tower_plausibility(cap, FeatureCache(), TEXTS, word_tokens, 3).method == "skipped"
    coca = small_objective("coca")
    found = text_tower_plausibility(coca, FeatureCache(), TEXTS, word_tokens, 3, image_size=16)
    assert found.method == "blank_image_likelihood" and torch.isfinite(found.scores).all() and found.scores.max() < 0
    root, images, _, _ = write_sugarcrepe(tmp_path, types=("add_obj", "swap_att"))  # the suites run a captioner
    task = SugarCrepeTask(root=str(root), images=str(images), types=["add_obj", "swap_att"])
    metrics = task.build(context(word_tokens))[0](cap, FeatureCache())
    kinds = ("add_obj", "swap_att", "mean")
    assert set(metrics) == {f"sugarcrepe/{t}/{p}acc" for t in kinds for p in ("", "blind_text/")}
    metrics = WinogroundTask(root=str(write_winoground(tmp_path)[0])).build(context(word_tokens))[0](
        cap, FeatureCache()
    )
    assert {"winoground/group", "winoground/both/image", "winoground/blind_text/text"} <= set(metrics)


def test_embedding_blind_score_is_typicality_and_other_objectives_are_skipped():
    clip = small_objective("clip")
    found = text_tower_plausibility(clip, FeatureCache(), TEXTS, word_tokens, 3)
    with torch.no_grad():
        embedded = clip.text_features(word_tokens(TEXTS)).numpy()
    assert found.method == "typicality"
    assert found.scores.tolist() == pytest.approx(typicality(embedded).tolist(), rel=1e-5)

    class TokensOnly(EmbeddingObjective):  # scores from token ids, nothing to decode
        def text_features(self, tokens):
            return tokens[:, None, :]

    only = TokensOnly(ColourModel(Lookup({})))
    found = text_tower_plausibility(only, FeatureCache(), TEXTS, word_tokens, 3, image_size=16)
    assert found.scores is None and "neither embeds texts" in found.reason
