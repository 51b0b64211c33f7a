"""CoOp (objective coop): the embedding hook against the text tower itself (a context set to a
template's own word embeddings gives encode_text of the tokenized template prompts), the loss
against cross-entropy written out by hand, what trains (the context alone, at every step), the
refusals, and a tiny run from ``train.init_from``: its export reloads with the class prompts and
classifies as the trained objective did, and a resumed run ends on the same context."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY, export_untrained
from vislang.checkpoint import load_checkpoint
from vislang.data import build_batches, build_sources
from vislang.data.world import SHAPES
from vislang.data.world_tasks import SHAPE_TEMPLATES
from vislang.errors import ConfigError
from vislang.experiment import build_config, build_objective
from vislang.export import export_model
from vislang.models.text.transformer import TextTransformer
from vislang.restore import load_objective
from vislang.tokenizers import BPETokenizer
from vislang.train import loop
from vislang.train.distributed import Ranks
from vislang.train.setup import build_trainable, start_context

LABELLED = {"data": {"sources": [{"kind": "labelled", "dataset": "world", "world_task": "shape"}]}}
QUICK = ["eval.tasks=[]", "train.log_every=1", "train.lr=1e-2", "train.warmup_steps=1"]
TEXTS = [t.format(s) for s in SHAPES for t in SHAPE_TEMPLATES] * 5
CPU = torch.device("cpu")


def _setup(objective: str, *overrides: str):
    """(config, sources, tokenizer, started objective) of the tiny model on the world's shapes."""
    cfg = build_config(LABELLED, TINY + QUICK + [f"objective={objective}", *overrides])
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    tokenizer = BPETokenizer.train(TEXTS, 300, cfg.model.text.context_length)
    torch.manual_seed(0)
    coop = build_objective(cfg, tokenizer.vocab_size, tokenizer.pad_id, sources["labelled"].classes)
    coop.start(start_context(cfg, tokenizer, sources, CPU))
    return cfg, sources, tokenizer, coop


def _batch(cfg, sources, tokenizer, size: int = 16) -> dict:
    batch = build_batches(cfg.data, cfg.model.vision, size, cfg.train.seed, tokenizer, sources)[0]
    batch.pop("counts")
    return batch


# -- the embedding hook -------------------------------------------------------------------------


@pytest.mark.parametrize("causal, pool", [(True, "eot"), (False, "mean"), (False, "end")])
def test_the_text_tower_from_its_own_embeddings_is_its_forward_bit_for_bit(causal, pool):
    torch.manual_seed(0)
    text = TextTransformer(60, 16, 0, context_length=10, width=32, depth=2, heads=2, causal=causal, pool=pool)
    tokens = torch.tensor([[1, 5, 9, 2, 0, 0, 0, 0, 0, 0], [1, 7, 0, 8, 3, 4, 2, 0, 0, 0]])
    for mode in (True, False):
        text.train(mode)
        with torch.no_grad():
            assert torch.equal(text.forward_embeddings(text.token_embed(tokens), tokens), text(tokens))
            moved = text.token_embed(tokens)
            moved[:, 1] += torch.randn(32)  # the embeddings given are the ones used (not a shift: LayerNorm)
            assert not torch.allclose(text.forward_embeddings(moved, tokens), text(tokens), atol=1e-4)


@pytest.mark.parametrize("class_specific", [False, True])
@pytest.mark.parametrize("template", ["a photo of a {}", "there is a {}"])
def test_a_context_of_a_templates_words_gives_encode_text_of_the_template_prompts(template, class_specific):
    words = template.replace(" {}", "")
    objective = f"{{kind: coop, init: {words}, class_specific: {str(class_specific).lower()}}}"
    cfg, sources, tokenizer, coop = _setup(objective)
    assert cfg.objective.n_ctx == len(words.split())
    sentences = [f"{template.format(name)}." for name in SHAPES]
    expected_tokens = tokenizer(sentences)
    assert torch.equal(coop.prompt_tokens, expected_tokens)
    n_ctx = cfg.objective.n_ctx
    assert coop.context.shape == ((len(SHAPES), n_ctx, 32) if class_specific else (n_ctx, 32))
    for mode in (True, False):
        coop.train(mode)
        with torch.no_grad():
            expected = coop.model.encode_text(expected_tokens)
            torch.testing.assert_close(coop.class_features(), expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        coop.context.add_(0.05 * torch.randn_like(coop.context))  # a moved context is not the template
        assert (coop.class_features() - expected).abs().max() > 1e-3


def test_a_random_context_sits_after_the_start_token_of_x_placeholders():
    cfg, sources, tokenizer, coop = _setup("{kind: coop, n_ctx: 3, class_specific: true}")
    assert coop.context.shape == (len(SHAPES), 3, 32) and 0.01 < coop.context.std() < 0.03
    names = tokenizer([f"{name}." for name in SHAPES])
    for c in range(len(SHAPES)):
        index = coop.context_index[c]
        assert index[1:4].tolist() == [3 * c, 3 * c + 1, 3 * c + 2]
        assert (index[:1] == -1).all() and (index[4:] == -1).all()
        assert coop.prompt_tokens[c, 0] == tokenizer.sot_id
        assert torch.equal(coop.prompt_tokens[c, 4:], names[c, 1:-3])  # the class name moved by n_ctx


# -- the loss ------------------------------------------------------------------------------------


def test_the_loss_is_cross_entropy_of_the_scaled_cosines_and_classify_gives_those_logits():
    cfg, sources, tokenizer, coop = _setup("{kind: coop, init: a photo of a, label_smoothing: 0.1}")
    batch = _batch(cfg, sources, tokenizer)
    coop.eval()
    with torch.no_grad():
        image = coop.image_features(batch["image"])
        texts = coop.model.encode_text(tokenizer([f"a photo of a {name}." for name in SHAPES]))
        logits = coop.model.scale() * image @ texts.T
        log_p = logits - logits.logsumexp(dim=1, keepdim=True)
        labels = batch["label"]
        nll = -log_p[torch.arange(len(labels)), labels]
        by_hand = (0.9 * nll - 0.1 * log_p.mean(dim=1)).mean()
        parts = coop.loss(batch)
        torch.testing.assert_close(coop.classify(image), logits, atol=1e-5, rtol=0)
    assert set(parts) == {"loss", "ce"}
    assert parts["loss"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert abs(parts["loss"].item() - nll.mean().item()) > 1e-4  # the smoothing counts


# -- the refusals --------------------------------------------------------------------------------


def test_a_hugging_face_text_tower_and_lora_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"model\.text\.pretrained: CoOp") as refused:
        build_config(LABELLED, TINY + QUICK + ["objective=coop", "model.text.pretrained=/x", "model.text.pool=cls"])
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"train\.lora"):
        build_config(LABELLED, TINY + QUICK + ["objective=coop", "train.lora={}"])


def test_init_words_of_another_token_count_and_prompts_beyond_the_context_are_one_line():
    with pytest.raises(
        ConfigError, match=r"objective\.init: 'a photo' is 2 tokens .*n_ctx is 3; set objective\.n_ctx: 2"
    ):
        _setup("{kind: coop, init: a photo, n_ctx: 3}")
    tokenizer = BPETokenizer.train(TEXTS, 300, 24)
    longest = max(int((row != tokenizer.pad_id).sum()) for row in tokenizer([f"{name}." for name in SHAPES]))
    fits = 24 - longest  # <sot>, the context, the longest name with its full stop, <eot>: 24 tokens
    coop = _setup(f"{{kind: coop, n_ctx: {fits}}}")[3]
    assert (coop.prompt_tokens[:, -1] == tokenizer.eot_id).any()
    with pytest.raises(
        ConfigError, match=rf"objective\.n_ctx: {fits + 1} context vectors .*context_length 24"
    ) as refused:
        _setup(f"{{kind: coop, n_ctx: {fits + 1}}}")
    assert "\n" not in str(refused.value)


# -- what trains ---------------------------------------------------------------------------------


def _start_export(tmp_path) -> str:
    """An untrained CLIP of the tiny model section as an export (the conv stem: BatchNorm buffers)."""
    torch.manual_seed(11)
    return export_untrained(build_config({}, TINY + QUICK), TEXTS, tmp_path / "start")


def test_one_optimizer_step_moves_the_context_alone(tmp_path):
    start = _start_export(tmp_path)
    cfg = build_config(
        LABELLED, TINY + QUICK + ["objective={kind: coop, init: a photo of a}", f"train.init_from={start}"]
    )
    sources = build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed)
    parts = build_trainable(cfg, tmp_path, sources, None, Ranks(), CPU)
    coop = parts.objective
    assert [n for n, p in coop.named_parameters() if p.requires_grad] == ["context"]
    assert [p for g in parts.optimizer.param_groups for p in g["params"]] == [coop.context]
    before = {n: v.clone() for n, v in coop.state_dict().items()}
    coop.train()
    coop.loss(_batch(cfg, sources, parts.tokenizer))["loss"].backward()
    parts.optimizer.step()
    after = coop.state_dict()
    assert any("running_mean" in n for n in after)
    assert [n for n in after if not torch.equal(before[n], after[n])] == ["context"]


def _record_run(monkeypatch) -> tuple[list[dict[str, torch.Tensor]], list]:
    """The objective's state before the first step and after each step, and the run itself."""
    seen, runs = [], []
    real = loop.optimizer_step

    def recording(run, batch, step):
        if not seen:
            runs.append(run)
            seen.append({n: v.detach().clone() for n, v in run.parts.objective.state_dict().items()})
        out = real(run, batch, step)
        seen.append({n: v.detach().clone() for n, v in run.parts.objective.state_dict().items()})
        return out

    monkeypatch.setattr(loop, "optimizer_step", recording)
    return seen, runs


def _stop_after(monkeypatch, steps: int) -> None:
    real = loop.optimizer_step

    def stopping(run, batch, step):
        if step == steps:
            raise RuntimeError("stopped")
        return real(run, batch, step)

    monkeypatch.setattr(loop, "optimizer_step", stopping)


def test_a_coop_run_trains_the_context_exports_reloads_and_resumes_exactly(tmp_path, monkeypatch):
    start = _start_export(tmp_path)
    objective = "objective={kind: coop, init: a photo of a}"
    run = ["train.steps=6", "train.batch_size=8", "train.checkpoint_every=3", "train.keep_checkpoints=3"]
    cfg = build_config(LABELLED, TINY + QUICK + [objective, f"train.init_from={start}", *run])
    seen, runs = _record_run(monkeypatch)
    loop.train(cfg, tmp_path / "straight", quiet=True)
    assert len(seen) == 7
    for before, after in zip(seen, seen[1:]):  # every step: the context moves, nothing else does
        assert [n for n in before if not torch.equal(before[n], after[n])] == ["context"]
    trained = runs[0].parts.objective.eval()
    start_weights = load_objective(start)[0].state_dict()
    for name, tensor in start_weights.items():  # the towers are the start's
        assert torch.equal(seen[-1][name], tensor), name

    export_model(tmp_path / "straight", tmp_path / "export")
    loaded, tokenizer, loaded_cfg = load_objective(tmp_path / "export")
    assert loaded_cfg.objective == cfg.objective and loaded.classes == trained.classes
    assert (tmp_path / "export" / "classes.json").is_file()
    assert torch.equal(loaded.prompt_tokens, tokenizer([f"a photo of a {name}." for name in SHAPES]))
    assert torch.equal(loaded.context, trained.context)
    batch = _batch(cfg, build_sources(cfg.data, cfg.model.vision.image_size, cfg.train.seed), tokenizer)
    with torch.no_grad():
        features = trained.image_features(batch["image"])
        assert torch.equal(loaded.image_features(batch["image"]), features)
        assert torch.equal(loaded.classify(features), trained.classify(features))
        assert loaded.classify(features).shape == (16, len(SHAPES))

    _stop_after(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="stopped"):
        loop.train(cfg, tmp_path / "stopped", quiet=True)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "stopped")["step"] == 3
    loop.train(cfg, tmp_path / "stopped", resume=True, quiet=True)
    resumed, straight = load_checkpoint(tmp_path / "stopped"), load_checkpoint(tmp_path / "straight")
    assert resumed["step"] == straight["step"] == 6
    assert torch.equal(resumed["model"]["context"], straight["model"]["context"])
    assert not torch.equal(straight["model"]["context"], seen[0]["context"])
    assert resumed["classes"] == straight["classes"] == trained.classes.to_json()
