"""Configs saved in checkpoints and exports before objectives owned their sections.

Runs written before that change hold ``objective: NAME`` with the loss fields under ``loss``,
the decoder under ``model.decoder`` and the evaluation as switches and sizes under ``eval``.
:func:`upgrade` rewrites such a saved config into today's layout, so those runs still open,
evaluate and resume. User YAML files are not upgraded silently: their old keys are refused with
a message saying where each went.
"""

from __future__ import annotations

import copy
from typing import Any

# The loss fields each objective read, by old name -> new name.
_OBJECTIVE_FIELDS = {
    "clip": {"label_smoothing": "label_smoothing", "hard_negative_images": "hard_negative_images"},
    "siglip": {"hard_negative_images": "hard_negative_images", "siglip_ring": "ring", "siglip_chunk": "chunk"},
    "cap": {},
    "cappa": {"parallel_prob": "parallel_prob"},
    "coca": {"contrastive_weight": "contrastive_weight", "caption_weight": "caption_weight"},
}
_EVAL_SWITCHES = {"zeroshot", "retrieval", "compositional", "n_classify", "n_retrieval", "n_probe", "aro",
                  "retrieval_sources"}  # fmt: skip


def is_legacy(raw: dict[str, Any]) -> bool:
    model, evaluation = raw.get("model") or {}, raw.get("eval") or {}
    return "loss" in raw or "decoder" in model or any(key in evaluation for key in _EVAL_SWITCHES)


def upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """A saved config of the old layout in today's; any other config unchanged."""
    if not is_legacy(raw):
        return raw
    raw = copy.deepcopy(raw)
    loss, decoder = raw.pop("loss", None) or {}, (raw.get("model") or {}).pop("decoder", None) or {}
    kind = raw.get("objective", "clip")
    objective: dict[str, Any] = {"kind": kind}
    objective |= {new: loss[old] for old, new in _OBJECTIVE_FIELDS.get(kind, {}).items() if old in loss}
    if kind in ("cap", "cappa", "coca") and decoder:
        objective["decoder"] = {"depth": decoder.get("depth", 2)}
        if kind == "coca" and "n_queries" in decoder:
            objective["decoder"]["n_queries"] = decoder["n_queries"]
    raw["objective"] = objective
    raw["eval"] = _upgrade_eval(raw.get("eval") or {})
    return raw


def _upgrade_eval(old: dict[str, Any]) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = []
    if old.get("zeroshot", True):
        tasks.append({"type": "zeroshot", "n": old.get("n_classify", 1000)})
    if old.get("retrieval", True):
        tasks.append({"type": "retrieval", "n": old.get("n_retrieval", 1000)})
    for i, source in enumerate(old.get("retrieval_sources") or []):
        name = source.get("name") or f"{source.get('kind', 'source')}{i}"
        tasks.append({"type": "retrieval", "source": source, "n": old.get("n_retrieval", 1000), "name": name})
    if old.get("compositional", True):
        tasks.append({"type": "compositional", "n": old.get("n_probe", 500)})
    tasks += [{"type": "aro", **aro} for aro in old.get("aro") or []]
    kept = {k: v for k, v in old.items() if k not in _EVAL_SWITCHES}
    return kept | {"tasks": tasks}
