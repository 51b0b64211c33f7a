"""Towers, pooling, masking, the two-tower model and the named presets."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from vislang.config import PRESETS, ModelConfig, TextConfig, VisionConfig
from vislang.models.text.pretrained import PretrainedTextTower
from vislang.models.text.transformer import TextTransformer
from vislang.models.vision.timm_tower import TimmTower
from vislang.models.vision.vit import VisionTransformer, keep_random_tokens, set_mask_ratio
from vislang.objectives import towers
from vislang.objectives.towers import build_two_tower, build_vision

SMALL_VIT = {"image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "heads": 2}


@pytest.mark.parametrize("stem", ["patch", "conv"])
@pytest.mark.parametrize("pool", ["cls", "mean", "map"])
def test_vit_shapes(stem, pool):
    out = VisionTransformer(embed_dim=16, **SMALL_VIT, stem=stem, pool=pool)(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 16)
    model = ModelConfig(embed_dim=16, vision=VisionConfig(**SMALL_VIT, stem=stem, pool=pool))
    assert build_vision(model, 16)(torch.randn(3, 3, 32, 32)).shape == (3, 16)


def test_tower_field_maps_name_config_fields_and_constructor_keywords():
    """towers.py passes section fields by name: a field missing from either side would be dropped silently."""
    for fields, section, tower in [
        (towers.VIT_FIELDS, VisionConfig, VisionTransformer),
        (towers.TIMM_FIELDS, VisionConfig, TimmTower),
        (towers.TEXT_FIELDS, TextConfig, TextTransformer),
        (towers.PRETRAINED_TEXT_FIELDS, TextConfig, PretrainedTextTower),
    ]:
        assert fields <= set(section.model_fields), tower
        assert fields <= set(inspect.signature(tower).parameters), tower


def test_masking_only_in_training_and_keeps_order():
    vit = VisionTransformer(embed_dim=16, **SMALL_VIT, pool="cls", mask_ratio=0.75)
    images = torch.randn(2, 3, 32, 32)
    assert vit.train().tokens(images).shape[1] == 1 + 4  # class token + 25% of 16 patches
    assert vit.eval().tokens(images).shape[1] == 1 + 16
    set_mask_ratio(torch.nn.Sequential(vit), 0.0)  # unmasked tuning reaches towers inside a model
    assert vit.train().tokens(images).shape[1] == 1 + 16
    tokens = torch.arange(10.0).view(1, 10, 1).expand(4, 10, 1)
    kept = keep_random_tokens(tokens, 5)[..., 0]
    assert kept.shape == (4, 5) and bool((kept.diff(dim=1) > 0).all())


def test_bidirectional_text_ignores_padding():
    shape = {"context_length": 12, "width": 32, "depth": 2, "heads": 2}
    text = TextTransformer(vocab_size=50, embed_dim=16, pad_id=0, **shape, causal=False, pool="mean").eval()
    short = torch.tensor([[1, 7, 8, 2] + [0] * 4])
    longer = torch.tensor([[1, 7, 8, 2] + [0] * 8])
    torch.testing.assert_close(text(short), text(longer))


def test_causal_text_pools_end_of_text():
    shape = {"context_length": 12, "width": 32, "depth": 2, "heads": 2}
    text = TextTransformer(vocab_size=50, embed_dim=16, pad_id=0, **shape, causal=True, pool="eot").eval()
    a = torch.tensor([[1, 7, 8, 2, 0, 0], [1, 7, 8, 9, 2, 0]])
    out = text(a)
    # the feature is read at EOT: the same tokens up to EOT give it, whatever padding follows
    torch.testing.assert_close(text(a[:1, :4]), out[:1])
    assert not torch.allclose(out[0], out[1])


def test_logit_scale_init_and_clamp():
    model = build_two_tower(ModelConfig(init_logit_scale=1000), vocab_size=40, pad_id=0)
    assert model.scale().item() == pytest.approx(100.0)
    model = build_two_tower(ModelConfig(init_logit_scale=10, init_logit_bias=-10), vocab_size=40, pad_id=0)
    assert model.scale().item() == pytest.approx(10.0) and model.bias().item() == -10.0
    assert build_two_tower(ModelConfig(), 40, 0).logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_encode_normalizes():
    model = build_two_tower(ModelConfig(vision=VisionConfig(image_size=32)), vocab_size=40, pad_id=0).eval()
    image = model.encode_image(torch.randn(2, 3, 32, 32))
    text = model.encode_text(torch.tensor([[1, 5, 2, 0], [1, 6, 7, 2]]))
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    assert model.encode_image(torch.randn(2, 3, 32, 32), normalize=False).norm(dim=-1).max() != 1.0


@pytest.mark.parametrize(("preset", "millions"), [("ViT-B-32", 151), ("ViT-B-16", 150), ("ViT-L-14", 428)])
def test_clip_presets_build_and_run(preset, millions):
    torch.manual_seed(0)
    model_cfg = ModelConfig(preset=preset, **PRESETS[preset])  # what model.preset expands to
    model = build_two_tower(model_cfg, vocab_size=49408, pad_id=0).eval()
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert n == pytest.approx(millions, rel=0.03)  # the published sizes of OpenAI's CLIP models
    with torch.no_grad():
        image = model.encode_image(torch.randn(1, 3, 224, 224))
        text = model.encode_text(torch.randint(1, 49000, (1, 77)))
    assert image.shape == text.shape == (1, model_cfg.embed_dim)


def test_sincos_position_embedding_is_fixed_and_encodes_both_axes():
    import math

    from vislang.models.vision.vit import VisionTransformer, sincos_2d

    table = sincos_2d(3, 8)
    assert table.shape == (1, 9, 8)
    # token (row 1, col 2): x = 2, y = 1; the first frequency is 1
    torch.testing.assert_close(
        table[0, 5, [0, 2, 4, 6]], torch.tensor([math.sin(2), math.cos(2), math.sin(1), math.cos(1)])
    )
    vit = VisionTransformer(16, image_size=32, patch_size=8, width=32, heads=2, pos_embed="sincos2d")
    assert "pos_embed" not in dict(vit.named_parameters()) and vit.pos_embed.shape == (1, 16, 32)


def test_gradient_checkpointing_recomputes_every_block_and_keeps_gradients(monkeypatch):
    import vislang.models.layers as layers

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        cfg = ModelConfig(  # the tests' tiny model (conftest.TINY) with two image blocks
            embed_dim=32,
            vision={**SMALL_VIT, "depth": 2, "grad_checkpointing": checkpointing},
            text={"width": 32, "depth": 1, "heads": 2, "context_length": 24, "grad_checkpointing": checkpointing},
        )
        torch.manual_seed(0)
        model = build_two_tower(cfg, vocab_size=50, pad_id=0).double()
        g = torch.Generator().manual_seed(1)
        images = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
        tokens = torch.randint(1, 50, (4, cfg.text.context_length), generator=g)
        image, text = model(images, tokens)
        (image @ text.T).logsumexp(dim=1).sum().backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    calls = []
    real = layers.checkpoint
    monkeypatch.setattr(layers, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain = gradients(False)
    assert not calls
    recomputed = gradients(True)
    assert len(calls) == 2 + 1  # two image blocks, one text block
    for name, grad in plain.items():
        assert torch.allclose(recomputed[name], grad, rtol=1e-10, atol=1e-12), name


def test_the_padding_id_inside_a_caption_is_text():
    """OpenAI's vocabulary pads with id 0, which is also "!": only trailing zeros are padding."""
    from vislang.models.text.transformer import real_tokens

    tokens = torch.tensor([[1, 5, 0, 6, 2, 0, 0], [1, 7, 2, 0, 0, 0, 0]])
    assert real_tokens(tokens, 0).tolist() == [
        [True, True, True, True, True, False, False],
        [True, True, True, False, False, False, False],
    ]
    for causal, pool in ((True, "eot"), (False, "mean")):
        shape = {"context_length": 7, "width": 16, "depth": 1, "heads": 2}
        torch.manual_seed(0)
        tower = TextTransformer(vocab_size=10, embed_dim=8, pad_id=0, **shape, causal=causal, pool=pool).eval()
        with torch.no_grad():
            x = tower.tokens(tokens)
            pooled = tower.pool(x, tokens)
        if pool == "eot":
            torch.testing.assert_close(pooled[0], x[0, 4])  # the end token, not position 3
        else:
            torch.testing.assert_close(pooled[0], x[0, :5].mean(dim=0))


def test_attention_implementations_agree_and_auto_picks_by_cpu_and_dtype(monkeypatch):
    """sdpa and math compute the same attention (padding and causal masks, cross-attention
    shapes); on a CPU "auto" takes sdpa only for bf16/fp16 without bf16 matrix units."""
    from vislang.models import layers

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    padding = torch.zeros(2, 1, 1, 7)
    padding[1, ..., 4:] = float("-inf")
    for mask in (None, padding):
        torch.testing.assert_close(layers.attention(q, k, v, mask, "sdpa"), layers.attention(q, k, v, mask, "math"))
    causal = torch.full((7, 7), float("-inf")).triu(1)
    torch.testing.assert_close(layers.attention(k, k, v, causal, "sdpa"), layers.attention(k, k, v, causal, "math"))

    calls = []
    real_sdpa = layers.F.scaled_dot_product_attention
    monkeypatch.setattr(
        layers.F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or real_sdpa(*a, **kw)
    )
    for has_units, dtype, fused in [(False, torch.float32, False), (True, torch.float32, False),
                                    (False, torch.bfloat16, True), (True, torch.bfloat16, False)]:  # fmt: skip
        monkeypatch.setattr(layers, "this_cpu_has_bf16_units", lambda has_units=has_units: has_units)
        calls.clear()
        layers.attention(q.to(dtype), k.to(dtype), v.to(dtype), None, "auto")
        assert bool(calls) == fused, (has_units, dtype)
