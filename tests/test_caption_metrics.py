"""Captioning metrics against pycocoevalcap (its scorers, its Java PTB tokenizer, its METEOR), the
COCO-format references reader and the captioning task end to end on a tiny untrained captioner."""

from __future__ import annotations

import json
import math
import random
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from vislang.config import WorldConfig
from vislang.data.benchmark.coco_captions import read_coco_captions
from vislang.errors import ConfigError, DataError
from vislang.eval import caption_metrics
from vislang.eval.caption_metrics import ptb_tokenize, ptb_tokenize_lines, score_captions, spice_missing
from vislang.eval.captioning import CaptioningTask
from vislang.eval.encode import FeatureCache, image_batches
from vislang.eval.tasks import EvalContext
from vislang.experiment import build_config, build_objective
from vislang.generation import GenerationConfig, generate

JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(not JAVA, reason="pycocoevalcap's tokenizer and METEOR need `java` on PATH")

REFERENCES = {
    391895: [
        "A man with a red helmet on a small moped on a dirt road. ",
        "Man riding a motor bike on a dirt road on the countryside.",
        "A man riding on the back of a motorcycle.",
        "A dirt path with a young person on a motor bike rests to the foreground of a verdant area.",
        "A man in a red shirt and a red hat is on a motorcycle on a hill side.",
    ],
    522418: [
        "A woman wearing a net on her head cutting a cake. ",
        "A woman cutting a large white sheet cake.",
        "A woman wearing a hair net cutting a large sheet cake.",
        "there is a woman that is cutting a white cake",
        "A woman marking a cake with the back of a chef's knife. ",
    ],
    184613: [
        "A child holding a flowered umbrella and petting a yak.",
        "A young man holding an umbrella next to a herd of cattle.",
        "a young boy barefoot holding an umbrella touching the horn of a cow",
        "A young boy with an umbrella who is touching the horn of a cow.",
        "A boy holding an umbrella while standing next to livestock.",
    ],
    318219: [
        "A young boy standing in front of a computer keyboard.",
        "a little boy wearing headphones and looking at a computer monitor",
        "He is listening intently to the computer at school.",
        "A young boy stares up at the computer monitor.",
        "a young kid with head phones on using a computer ",
    ],
    554625: [
        "a boy wearing headphones using one computer in a long row of computers",
        "A little boy with earphones on listening to something.",
        "A group of people sitting at desk using computers.",
        "Children sitting at computer stations on a long table.",
        "A small child wearing headphones plays on the computer.",
    ],
    397133: [
        "A man is in a kitchen making pizzas.",
        "Man in apron standing on front of oven with pans and bakeware",
        "A baker is working in the kitchen rolling dough.",
        "A person standing by a stove in a kitchen.",
        "A table with pies being made and a person standing near a wall with pots and pans hanging on it.",
    ],
}
CANDIDATES = {
    391895: "a man riding a motorcycle on a dirt road",
    522418: "a woman cutting a cake with a knife.",
    184613: "A boy holding an umbrella next to a cow.",
    318219: "a young boy using a computer",
    554625: "a group of children sitting at computers",
    397133: "a man standing in a kitchen making pizza",
}

# Captions with what the PTB tokenizer treats specially: clitics, hyphens, quotes, brackets,
# numbers, abbreviations (also at a line's end, before the next line's capital), unicode.
TRICKY = [
    "A man's dog isn't running.",
    "They're sure it's the dogs' bowl, and we've won't can't cannot.",
    '"Hello," she said (quietly).',
    "A sign that says 'stop' near a \"No Parking\" sign.",
    "A black-and-white photo of 1,000 people in 3.5 hours -- or 10:30 p.m.",
    "A 10-year-old in a t-shirt.",
    "The U.S. flag.",
    "I live in the U.S.",
    "Mr. Smith and Dr. Jones at St. Mark's.",
    "Cookies, cakes etc.",
    "A man at 5 p.m. The man.",
    "a dog.the cat",
    "A man---with a hat - and a cat...",
    "Wait . . . what?!",
    "a/b and/or black/white 1/2 eaten 5 1/2 inch",
    "$5 and 100% and #1 and @home and x+y=z",
    "AT&T B&W R&B",
    "it’s don’t the dog’s ‘quoted’ “double” — – …",
    "café naïve jalapeño ½ ° ×",
    "gonna wanna gotta gimme lemme",
    "rock'n'roll in the '90s and 90's o'clock y'all 'tis ma'am O'Reilly",
    "[here] {there} <b>bold</b> :) ;-(",
    "No. 5 and No. a",
    "Calif. And Calif. and",
    "e.g. i.e. a.m.",
    "5.jpg photo.png",
    "",
    "   ",
    "A",
]


def _generated_captions(n: int, seed: int) -> list[str]:
    """Caption-like lines built from awkward fragments (a wider net than TRICKY)."""
    rng = random.Random(seed)
    pieces = "a man dog's isn't U.S. Mr. etc. e.g. 3.5 1,000 t-shirt 1/2 '90s y'all AT&T ( ) \" ' - -- ... ; : ! ?"
    words = pieces.split() + ["on", "the", "The", "A", "table", "red", ".", ","]
    return [
        "".join(rng.choice(["", " ", " "]) + rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(n)
    ]


def _direct(gts: dict, res: dict) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    return {
        **{f"BLEU-{n + 1}": b for n, b in enumerate(bleu)},
        "ROUGE_L": Rouge().compute_score(gts, res)[0],
        "CIDEr": Cider().compute_score(gts, res)[0],
    }


def _tokenised():
    keys = list(REFERENCES)
    flat = iter(ptb_tokenize_lines([c for k in keys for c in REFERENCES[k]]))
    gts = {k: [next(flat) for _ in REFERENCES[k]] for k in keys}
    res = dict(zip(keys, ([c] for c in ptb_tokenize_lines([CANDIDATES[k] for k in keys]))))
    return gts, res


def test_scores_equal_pycocoevalcap_scorers_on_the_tokenised_captions():
    scores = score_captions(REFERENCES, CANDIDATES, java=False)
    gts, res = _tokenised()
    for name, value in _direct(gts, res).items():
        assert scores[name] == pytest.approx(value, abs=1e-12), name
    assert 0 < scores["BLEU-4"] < scores["BLEU-1"] < 1 and 0 < scores["ROUGE_L"] < 1 and scores["CIDEr"] > 0.5
    assert scores["METEOR"] is None and scores["SPICE"] is None and set(scores.missing) == {"METEOR", "SPICE"}
    # tokenize=False scores the texts as given; a candidate equal to a reference is a perfect match
    same = score_captions(
        {1: ["a b c d e"], 2: ["f g h i j"]}, {1: "a b c d e", 2: "f g h i j"}, tokenize=False, java=False
    )
    assert same["BLEU-4"] == pytest.approx(1.0) and same["ROUGE_L"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same keys"):
        score_captions(REFERENCES, {391895: "a man"}, java=False)


def test_without_java_meteor_and_spice_are_absent_with_the_reason(monkeypatch):
    monkeypatch.setattr(caption_metrics.shutil, "which", lambda name: None)
    scores = score_captions(REFERENCES, CANDIDATES)
    assert scores["METEOR"] is None and scores["SPICE"] is None
    assert "java" in scores.missing["METEOR"] and "java" in scores.missing["SPICE"]


@needs_java
def test_ptb_tokenize_equals_the_java_ptb_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = TRICKY + _generated_captions(300, seed=3)
    java = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    ours = ptb_tokenize_lines(captions)
    assert [java[i][0] for i in range(len(captions))] == ours
    # the COCO cases spelled out: clitics split, brackets kept as -lrb- / -rrb-, punctuation dropped
    assert ptb_tokenize("A man's dog isn't running.") == "a man 's dog is n't running"
    assert ptb_tokenize('"Hello," she said (quietly).') == "hello she said -lrb- quietly -rrb-"
    assert ptb_tokenize("A black-and-white photo of 1,000 people.") == "a black-and-white photo of 1,000 people"


@needs_java
def test_meteor_equals_pycocoevalcap_meteor_and_spice_is_absent_without_its_jars(monkeypatch):
    from pycocoevalcap.meteor import meteor

    started = []

    class Recorded(meteor.Meteor):
        def __init__(self) -> None:
            super().__init__()
            started.append(self)

    reference = meteor.Meteor()  # starts loading now, alongside the one score_captions starts
    monkeypatch.setattr(meteor, "Meteor", Recorded)
    scores = score_captions(REFERENCES, CANDIDATES)
    gts, res = _tokenised()
    try:
        expected = reference.compute_score(gts, res)[0]
    finally:
        reference.meteor_p.kill()
        reference.meteor_p.wait()
    assert isinstance(scores["METEOR"], float) and scores["METEOR"] == pytest.approx(expected, abs=1e-9)
    assert len(started) == 1 and started[0].meteor_p.poll() is not None  # its Java process has ended
    if spice_missing() is not None:
        assert scores["SPICE"] is None and "stanford-corenlp" in scores.missing["SPICE"]


# -- the COCO-format reader ---------------------------------------------------------------------


def _write_png(path, value: int) -> None:
    Image.fromarray(np.full((20, 24, 3), value, dtype=np.uint8)).save(path)


def _coco(tmp_path, images=None, annotations=None):
    """A captions_val2014.json-style file and its image folder."""
    root = tmp_path / "val2014"
    root.mkdir(exist_ok=True)
    ids = list(REFERENCES)[:3]
    if images is None:
        images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.png", "height": 20, "width": 24} for i in ids]
        images.append({"id": 7, "file_name": "uncaptioned.png"})
        for k, image in enumerate(images[:3]):
            _write_png(root / image["file_name"], 40 * k)
    if annotations is None:
        annotations = [
            {"id": 10 * i + j, "image_id": i, "caption": c} for i in ids for j, c in enumerate(REFERENCES[i])
        ]
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    return path, root


def test_coco_reader_reads_images_in_file_order_with_their_captions(tmp_path):
    path, root = _coco(tmp_path)
    data = read_coco_captions(path, root)
    assert data.image_ids == list(REFERENCES)[:3] and data.uncaptioned == 1
    assert data.captions == [REFERENCES[i] for i in data.image_ids]
    assert [data.images.name(i) for i in range(3)] == [str(root / f"COCO_val2014_{i:012d}.png") for i in data.image_ids]
    assert read_coco_captions(path, root, n=2).image_ids == data.image_ids[:2]


ONE_IMAGE = [{"id": 1, "file_name": "a.png"}]


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"images": [,]}', "not valid JSON"),
        ('{"annotations": []}', "'images' list"),
        (json.dumps({"images": [{"id": 1}], "annotations": []}), r"images\[0\] needs"),
        (json.dumps({"images": ONE_IMAGE * 2, "annotations": []}), "appears twice"),
        (json.dumps({"images": ONE_IMAGE, "annotations": [{"image_id": 99, "caption": "x"}]}), "image id 99"),
        (json.dumps({"images": ONE_IMAGE, "annotations": [{"image_id": 1}]}), r"annotations\[0\] needs"),
        (json.dumps({"images": ONE_IMAGE, "annotations": []}), "no image has a caption"),
    ],
)
def test_coco_reader_refuses_broken_files_in_one_line(tmp_path, text, message):
    path, root = _coco(tmp_path)
    path.write_text(text)
    with pytest.raises(DataError, match=message) as error:
        read_coco_captions(path, root)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_coco_reader_names_the_missing_image_file_and_its_id(tmp_path):
    path, root = _coco(tmp_path)
    missing = root / f"COCO_val2014_{list(REFERENCES)[1]:012d}.png"
    missing.unlink()
    with pytest.raises(DataError, match=f"image id {list(REFERENCES)[1]}.*not found: {missing}"):
        read_coco_captions(path, root)


# -- the task end to end ------------------------------------------------------------------------

WORDS = ["<pad>", "<sot>", "<eot>"] + sorted({w for cs in REFERENCES.values() for c in cs for w in c.lower().split()})


class WordTokenizer:
    """Ids to words from the references' own vocabulary: an untrained model's captions share words
    with the references, so the metrics have something to count."""

    pad_id, sot_id, eot_id = 0, 1, 2

    def decode(self, ids):
        ids = list(ids)
        ids = ids[: ids.index(self.eot_id)] if self.eot_id in ids else ids
        return " ".join(WORDS[i] for i in ids if i > 2)

    def __call__(self, texts):
        raise AssertionError("captioning does not tokenise texts")


MODEL = {
    "embed_dim": 16,
    "vision": {"image_size": 16, "patch_size": 8, "width": 16, "depth": 1, "heads": 2},
    "text": {"width": 16, "heads": 2, "depth": 1, "context_length": 12},
}


def _objective(kind: str):
    torch.manual_seed(0)
    objective = {"kind": kind, **({"decoder": {"depth": 1}} if kind != "clip" else {})}
    return build_objective(build_config({"model": MODEL, "objective": objective}), len(WORDS), 0).eval()


def _context() -> EvalContext:
    return EvalContext(WordTokenizer(), 16, (0.5,) * 3, (0.5,) * 3, 2, 0, WorldConfig(), lambda source: None)


def test_captioning_task_generates_and_scores_a_tiny_captioner(tmp_path):
    path, root = _coco(tmp_path)
    task = CaptioningTask(references=str(path), images=str(root), name="tiny", max_length=8, java=False)
    assert task.metric_prefix() == "captioning_tiny"
    assert CaptioningTask(references="r.json", images="i").metric_prefix() == "captioning"
    with pytest.raises(ValidationError):
        CaptioningTask(references="r.json", images="i", method="sample")
    context = _context()
    (evaluator,) = task.build(context)
    objective = _objective("cap")
    metrics = evaluator(objective, FeatureCache())
    names = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE_L", "CIDEr"]
    assert sorted(metrics) == sorted(f"captioning_tiny/{m}" for m in names)
    assert all(0 <= metrics[f"captioning_tiny/{m}"] <= 1 for m in names[:5]) and metrics["captioning_tiny/CIDEr"] >= 0
    assert set(evaluator.missing) == {"METEOR", "SPICE"} and all(math.isfinite(v) for v in metrics.values())
    # the captions are the generation API's on the task's own preprocessing, and the scores theirs
    data = read_coco_captions(path, root)
    batches = image_batches(data.images, context.pipeline())
    rows = torch.cat([generate(objective.model, b, 1, 2, 0, GenerationConfig(max_length=8)) for b in batches])
    assert evaluator.captions == [WordTokenizer().decode(r.tolist()) for r in rows]
    candidates = dict(zip(data.image_ids, evaluator.captions))
    expected = score_captions(dict(zip(data.image_ids, data.captions)), candidates, java=False)
    assert metrics == {f"captioning_tiny/{m}": expected[m] for m in names}
    beam = CaptioningTask(references=str(path), images=str(root), method="beam", beam_size=2, max_length=6, java=False)
    assert set(beam.build(context)[0](_objective("coca"), FeatureCache())) >= {"captioning/CIDEr", "captioning/BLEU-4"}


def test_captioning_refuses_a_contrastive_objective(tmp_path):
    path, root = _coco(tmp_path)
    (evaluator,) = CaptioningTask(references=str(path), images=str(root), java=False).build(_context())
    with pytest.raises(ConfigError, match="cap, cappa or coca"):
        evaluator(_objective("clip"), FeatureCache())
