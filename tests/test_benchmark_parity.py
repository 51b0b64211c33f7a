"""vislang's zero-shot and retrieval numbers against CLIP_benchmark's own evaluation functions,
called as shipped, on the same model and data: to 1e-6.

One shim, and only one: clip_benchmark 1.6.2's ``zeroshot_classification.accuracy`` calls
``float()`` on a one-element array, which numpy 2.x refuses; the tests replace that helper by
the same arithmetic (topk of the largest k, the first k rows summed, divided by N) with
``.item()``. Everything else, ``zero_shot_classifier``, ``run_classification``,
``zeroshot_classification.evaluate``, ``recall_at_k``, ``batchify`` and
``zeroshot_retrieval.evaluate``, runs unmodified.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vislang.eval.metrics import classification_metrics, retrieval_recall_topk

open_clip = pytest.importorskip("open_clip")
zsc = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
zsr = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
builder = pytest.importorskip("clip_benchmark.datasets.builder")
safetensors_torch = pytest.importorskip("safetensors.torch")
balanced_accuracy_score = pytest.importorskip("sklearn.metrics").balanced_accuracy_score


def _accuracy_shim(output, target, topk=(1,)):
    """clip_benchmark's accuracy, arithmetic unchanged, with .item() where it calls float() on an array."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).item() / len(target) for k in topk]


@pytest.fixture
def shimmed_accuracy(monkeypatch):
    monkeypatch.setattr(zsc, "accuracy", _accuracy_shim)


@pytest.mark.parametrize("seed", range(4))
def test_classification_metrics_equal_clip_benchmark_with_ties(seed, shimmed_accuracy):
    """Integer-valued logits tie everywhere: the tie-break must be topk's, as CLIP_benchmark's."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, 3, (300, 12), generator=g).float()
    labels = torch.randint(0, 12, (300,), generator=g)
    ours = classification_metrics(logits, labels, (1, 5), ties="clip_benchmark")
    acc1, acc5 = zsc.accuracy(logits, labels, topk=(1, 5))
    assert ours["top1"] == pytest.approx(acc1, abs=1e-6)
    assert ours["top5"] == pytest.approx(acc5, abs=1e-6)
    recall = balanced_accuracy_score(labels.numpy(), logits.argmax(axis=1).numpy())
    assert ours["mean_per_class_recall"] == pytest.approx(recall, abs=1e-6)
    # the tie-aware convention differs on ties, and gives chance to constant logits
    assert classification_metrics(torch.zeros(40, 4), torch.arange(40) % 4, (1,), "expected")["top1"] == pytest.approx(
        0.25
    )


def _their_recalls(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor, ks, batch_size: int) -> dict:
    """CLIP_benchmark's retrieval metrics from embeddings, exactly as its evaluate() computes them."""
    scores = texts @ images.t()
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), owner] = True
    out = {}
    for k in ks:
        t2i = zsr.batchify(zsr.recall_at_k, scores, positive, batch_size, "cpu", k=k)
        i2t = zsr.batchify(zsr.recall_at_k, scores.T, positive.T, batch_size, "cpu", k=k)
        out[f"text_to_image/R@{k}"] = (t2i > 0).float().mean().item()
        out[f"image_to_text/R@{k}"] = (i2t > 0).float().mean().item()
    return out


@pytest.mark.parametrize("seed", range(3))
def test_retrieval_recall_equals_clip_benchmark_with_duplicate_captions(seed):
    """Several captions per image, and many captions that are exact duplicates of others (so
    their embeddings tie exactly), scored in chunks smaller than the set."""
    g = torch.Generator().manual_seed(seed)
    n_images, dim = 60, 16
    images = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    owner = torch.arange(n_images).repeat_interleave(3)[torch.randperm(3 * n_images, generator=g)]
    vocabulary = torch.nn.functional.normalize(torch.randn(25, dim, generator=g), dim=-1)  # 25 distinct captions
    texts = vocabulary[torch.randint(0, 25, (len(owner),), generator=g)]
    texts = texts + 0.3 * images[owner]  # related to their images, yet with exact duplicates where the pair repeats
    texts = torch.nn.functional.normalize(texts.round(decimals=1), dim=-1)
    ks = (1, 2, 5, 10)
    ours = retrieval_recall_topk(images, texts, owner, lambda a, b: a @ b.T, ks, chunk=7)
    theirs = _their_recalls(images, texts, owner, ks, batch_size=13)
    assert len({tuple(t.tolist()) for t in texts}) < len(texts)  # duplicates are there
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


# -- end to end: a converted OpenCLIP model, files in the published layouts -------------------------

SMALL = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLASSES = ["red", "green", "blue", "yellow", "purple", "cyan"]
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30), (150, 30, 160), (30, 210, 210)]
TEMPLATES = ["a photo of a {c} thing.", "something {c}.", "a {c} square."]


def _open_clip_folder(path) -> torch.nn.Module:
    """A randomly initialised OpenCLIP model saved as OpenCLIP's local folder (config + safetensors)."""
    torch.manual_seed(0)
    peer = open_clip.CLIP(**SMALL).eval()
    with torch.no_grad():  # larger weights than the initialisation's: image features that differ between images
        for parameter in peer.visual.transformer.parameters():
            parameter.mul_(3)
    path.mkdir()
    config = {"model_cfg": SMALL, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic"}}
    (path / "open_clip_config.json").write_text(json.dumps(config))
    safetensors_torch.save_file(
        {k: v.contiguous() for k, v in peer.state_dict().items()}, str(path / "open_clip_model.safetensors")
    )
    return peer


def _image(colour, seed: int, size=(45, 38)) -> Image.Image:
    """A coarse random texture tinted by ``colour``: varied enough that even a random model's
    predictions differ between images (so a comparison of predictions can fail)."""
    pattern = np.random.default_rng(seed).integers(0, 256, (6, 8, 3))
    mixed = np.clip(0.85 * pattern + 0.15 * np.array(colour), 0, 255).astype(np.uint8)
    return Image.fromarray(mixed).resize(size, Image.NEAREST)


def _peer_transform(peer):
    import torchvision.transforms as T

    size = SMALL["vision_cfg"]["image_size"]
    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            lambda im: im.convert("RGB"),
            T.ToTensor(),
            T.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )


def test_zeroshot_on_an_imagefolder_equals_clip_benchmark(tmp_path, shimmed_accuracy):
    import torchvision

    from vislang.api import load_objective
    from vislang.eval.suite import SuiteConfig, run_suite
    from vislang.experiment import eval_context

    peer = _open_clip_folder(tmp_path / "oc")
    for c, (name, colour) in enumerate(zip(CLASSES, COLOURS)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(7):
            _image(colour, 10 * c + i).save(tmp_path / "data" / name / f"{i}.png")
    folder = torchvision.datasets.ImageFolder(str(tmp_path / "data"), transform=_peer_transform(peer))
    loader = torch.utils.data.DataLoader(folder, batch_size=8)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    theirs = zsc.evaluate(peer, loader, tokenizer, CLASSES, TEMPLATES, "cpu", amp=False)

    objective, vl_tokenizer, cfg = load_objective(tmp_path / "oc")
    suite = SuiteConfig(
        tasks=[{"type": "zeroshot", "dataset": {"format": "imagefolder", "path": str(tmp_path / "data"),
                                                "classnames": CLASSES, "templates": TEMPLATES}}]
    )  # fmt: skip
    [result] = run_suite(objective, suite.tasks, eval_context(cfg, vl_tokenizer, batch_size=5))
    assert result.metrics["top1"] == pytest.approx(theirs["acc1"], abs=1e-6)
    assert result.metrics["top5"] == pytest.approx(theirs["acc5"], abs=1e-6)
    assert result.metrics["mean_per_class_recall"] == pytest.approx(theirs["mean_per_class_recall"], abs=1e-6)
    assert result.details["ties"] == "clip_benchmark"
    # not only the same metrics: the same prediction for every image, from their own classifier
    classifier = zsc.zero_shot_classifier(peer, tokenizer, CLASSES, TEMPLATES, "cpu", amp=False)
    logits, _ = zsc.run_classification(peer, classifier, loader, "cpu", amp=False)
    assert result.details["predictions"] == logits.argmax(dim=1).tolist()
    assert len(set(result.details["predictions"])) > 1  # a model that is not constant: the check can fail


def test_retrieval_on_a_karpathy_split_equals_clip_benchmark(tmp_path):
    from vislang.api import load_objective
    from vislang.eval.suite import SuiteConfig, run_suite
    from vislang.experiment import eval_context

    peer = _open_clip_folder(tmp_path / "oc")
    (tmp_path / "images").mkdir()
    entries, pairs = [], []
    for i in range(14):
        colour = COLOURS[i % 6]
        _image(colour, i).save(tmp_path / "images" / f"{i}.jpg")
        captions = [f"a {CLASSES[i % 6]} square", f"something {CLASSES[i % 6]}", "a photo"]  # duplicates across images
        entries.append({"filename": f"{i}.jpg", "split": "test", "sentences": [{"raw": c} for c in captions]})
        pairs.append((tmp_path / "images" / f"{i}.jpg", captions))
    entries.append({"filename": "x.jpg", "split": "train", "sentences": [{"raw": "not in the test split"}]})
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))

    transform = _peer_transform(peer)

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, i):
            return transform(Image.open(pairs[i][0])), pairs[i][1]

    loader = torch.utils.data.DataLoader(Pairs(), batch_size=4, collate_fn=builder.image_captions_collate_fn)
    theirs = zsr.evaluate(peer, loader, open_clip.get_tokenizer("ViT-B-32"), "cpu", amp=False, recall_k_list=[1, 5, 10])

    objective, vl_tokenizer, cfg = load_objective(tmp_path / "oc")
    suite = SuiteConfig(
        tasks=[{"type": "retrieval", "ks": [1, 5, 10], "dataset": {"format": "karpathy", "split": "test",
                "path": str(tmp_path / "dataset_flickr30k.json"), "images": str(tmp_path / "images")}}]
    )  # fmt: skip
    [result] = run_suite(objective, suite.tasks, eval_context(cfg, vl_tokenizer, batch_size=3))
    for k in (1, 5, 10):
        assert result.metrics[f"text_to_image/R@{k}"] == pytest.approx(theirs[f"image_retrieval_recall@{k}"], abs=1e-6)
        assert result.metrics[f"image_to_text/R@{k}"] == pytest.approx(theirs[f"text_retrieval_recall@{k}"], abs=1e-6)


class _HFForClipBenchmark(torch.nn.Module):
    """A Hugging Face CLIPModel with the encode_image / encode_text CLIP_benchmark calls."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def encode_image(self, images):
        return _features(self.model.get_image_features(pixel_values=images))

    def encode_text(self, tokens):
        return _features(self.model.get_text_features(input_ids=tokens))


def _features(output):
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def test_zeroshot_of_a_hugging_face_folder_equals_clip_benchmark(tmp_path, shimmed_accuracy):
    """vislang.load of a Hugging Face CLIPModel folder, against the HF model itself in
    CLIP_benchmark's evaluate, with vislang's preprocessing as the loader's transform on both sides."""
    import torchvision

    import vislang
    from vislang.api import load_objective
    from vislang.eval.suite import SuiteConfig, run_suite
    from vislang.experiment import eval_context

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1}
    config = transformers.CLIPConfig(
        text_config={**small, "max_position_embeddings": 77},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=24,
    )
    peer = transformers.CLIPModel(config).eval()
    peer.save_pretrained(tmp_path / "hf")
    for c, (name, colour) in enumerate(zip(CLASSES, COLOURS)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(5):
            _image(colour, 10 * c + i).save(tmp_path / "data" / name / f"{i}.png")
    _, _, preprocess = vislang.load(tmp_path / "hf")
    loader = torch.utils.data.DataLoader(
        torchvision.datasets.ImageFolder(str(tmp_path / "data"), transform=preprocess), batch_size=8
    )
    theirs = zsc.evaluate(
        _HFForClipBenchmark(peer), loader, open_clip.get_tokenizer("ViT-B-32"), CLASSES, TEMPLATES, "cpu", amp=False
    )

    objective, tokenizer, cfg = load_objective(tmp_path / "hf")
    suite = SuiteConfig(tasks=[{"type": "zeroshot", "dataset": {"format": "imagefolder", "path": str(tmp_path / "data"),
                                                                "classnames": CLASSES, "templates": TEMPLATES}}])  # fmt: skip
    [result] = run_suite(objective, suite.tasks, eval_context(cfg, tokenizer, batch_size=4))
    assert result.metrics["top1"] == pytest.approx(theirs["acc1"], abs=1e-6)
    assert result.metrics["top5"] == pytest.approx(theirs["acc5"], abs=1e-6)
    assert result.metrics["mean_per_class_recall"] == pytest.approx(theirs["mean_per_class_recall"], abs=1e-6)
