"""Objectives by name: the ``objective`` config field picks one of :data:`OBJECTIVES`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vislang.config import RunConfig
    from vislang.objectives.base import Objective


def _image_bank(cfg: RunConfig):
    """The hard-negative image bank of ``loss.hard_negative_images`` entries, or None."""
    if not cfg.loss.hard_negative_images:
        return None
    from vislang.objectives.hard_negatives import ImageBank

    size, m = cfg.model.vision.image_size, cfg.model
    return ImageBank(cfg.loss.hard_negative_images, (3, size, size), m.text.context_length, m.embed_dim)


def _clip(cfg: RunConfig, vocab_size: int, pad_id: int) -> Objective:
    from vislang.models import build_two_tower
    from vislang.objectives.contrastive import ClipObjective

    model = build_two_tower(cfg.model, vocab_size, pad_id)
    return ClipObjective(model, cfg.loss.label_smoothing, _image_bank(cfg))


def _siglip(cfg: RunConfig, vocab_size: int, pad_id: int) -> Objective:
    from vislang.models import build_two_tower
    from vislang.objectives.sigmoid import SiglipObjective

    return SiglipObjective(
        build_two_tower(cfg.model, vocab_size, pad_id), _image_bank(cfg), cfg.loss.siglip_ring, cfg.loss.siglip_chunk
    )


def _cap(cfg: RunConfig, vocab_size: int, pad_id: int) -> Objective:
    from vislang.models import build_captioner
    from vislang.objectives.captioning import CaptioningObjective

    return CaptioningObjective(build_captioner(cfg.model, vocab_size, pad_id), pad_id, 0.0)


def _cappa(cfg: RunConfig, vocab_size: int, pad_id: int) -> Objective:
    from vislang.models import build_captioner
    from vislang.objectives.captioning import CaptioningObjective

    return CaptioningObjective(build_captioner(cfg.model, vocab_size, pad_id), pad_id, cfg.loss.parallel_prob)


def _coca(cfg: RunConfig, vocab_size: int, pad_id: int) -> Objective:
    from vislang.models import build_coca
    from vislang.objectives.coca import CocaObjective

    model = build_coca(cfg.model, vocab_size, pad_id)
    return CocaObjective(model, pad_id, cfg.loss.contrastive_weight, cfg.loss.caption_weight)


OBJECTIVES: dict[str, Callable[[RunConfig, int, int], Objective]] = {
    "clip": _clip,
    "siglip": _siglip,
    "cap": _cap,
    "cappa": _cappa,
    "coca": _coca,
}


def build_objective(cfg: RunConfig, vocab_size: int, pad_id: int) -> Objective:
    return OBJECTIVES[cfg.objective](cfg, vocab_size, pad_id)
