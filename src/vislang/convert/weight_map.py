"""Declarative tensor-name maps between a peer's state dict and vislang's, read in both directions.

Each peer describes its layout once, as entries ``(peer pattern, vislang pattern[, transform])``;
import and export are the same table read left-to-right or right-to-left, so the two directions
cannot drift apart. A pattern is a tensor name in which ``{i}`` stands for a layer index and
``{*}`` for the rest of the name (``"visual.ln_pre.{*}"`` covers ``weight`` and ``bias``). An
entry whose peer side is a tuple of patterns fuses several peer tensors into one of vislang's
(q/k/v projections), and its transform splits them again on export.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from vislang.errors import ConfigError

Tensor = torch.Tensor


@dataclass(frozen=True)
class Transform:
    """A tensor change and its exact inverse: ``to_ours`` joins the peer's tensors of one entry
    into vislang's, ``to_peer`` splits vislang's back into as many. Both must be lossless (views,
    reshapes, concatenation), since a round trip has to give the peer's tensors bit for bit."""

    to_ours: Callable[[Sequence[Tensor]], Tensor]
    to_peer: Callable[[Tensor], Sequence[Tensor]]


def one_to_one(to_ours: Callable[[Tensor], Tensor], to_peer: Callable[[Tensor], Tensor]) -> Transform:
    """A transform of a single tensor, from a function and its inverse."""
    return Transform(lambda parts: to_ours(parts[0]), lambda tensor: (to_peer(tensor),))


def scalar(peer_shape: tuple[int, ...]) -> Transform:
    """vislang keeps logit scale and bias as 0-d tensors; peers differ in whether they are [] or [1]."""
    return one_to_one(lambda t: t.reshape(()), lambda t: t.reshape(peer_shape))


def fused_rows(count: int) -> Transform:
    """``count`` equally shaped peer tensors stacked along the first dimension (vislang's fused
    in-projection has the rows of q, then k, then v)."""
    return Transform(lambda parts: torch.cat(list(parts)), lambda tensor: tensor.chunk(count))


SAME = one_to_one(lambda t: t, lambda t: t)
# the peer stores a projection as a matrix applied as ``x @ proj``; vislang as a Linear weight
TRANSPOSE = one_to_one(lambda t: t.t(), lambda t: t.t())
# the peer stores one class token / position table without the batch dimension vislang broadcasts over
CLS_TOKEN = one_to_one(lambda t: t.reshape(1, 1, -1), lambda t: t.reshape(-1))
BATCH_DIM = one_to_one(lambda t: t.unsqueeze(0), lambda t: t.squeeze(0))

Peer = str | tuple[str, ...]
Entry = tuple[Peer, str] | tuple[Peer, str, Transform]

_FIELDS = {"{i}": r"(?P<i>\d+)", "{*}": r"(?P<rest>.+)"}


class _Pattern:
    """A tensor name with placeholders, matched against names and filled from a match."""

    def __init__(self, text: str) -> None:
        pieces = re.split(r"(\{i\}|\{\*\})", text)
        self.text = text
        self.fields = frozenset(piece for piece in pieces if piece in _FIELDS)
        self.regex = re.compile("".join(_FIELDS.get(piece, re.escape(piece)) for piece in pieces))

    def match(self, name: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(name)
        return None if found is None else found.groupdict()

    def fill(self, values: dict[str, str]) -> str:
        return self.text.replace("{i}", values.get("i", "")).replace("{*}", values.get("rest", ""))


@dataclass(frozen=True)
class _Rule:
    peer: tuple[_Pattern, ...]
    ours: _Pattern
    transform: Transform


def _full(entry: Entry) -> tuple[Peer, str, Transform]:
    return (entry[0], entry[1], entry[2] if len(entry) == 3 else SAME)


def _rule(entry: Entry) -> _Rule:
    peer, ours, transform = _full(entry)
    rule = _Rule(tuple(_Pattern(p) for p in ((peer,) if isinstance(peer, str) else peer)), _Pattern(ours), transform)
    if any(p.fields != rule.ours.fields for p in rule.peer):
        raise ValueError(f"weight map entry {entry!r}: both sides need the same placeholders")
    return rule


def under(peer_prefix: str, ours_prefix: str, entries: Iterable[Entry]) -> list[Entry]:
    """``entries`` with a prefix put before each side, so a block or tower is written once and
    placed wherever it occurs."""
    out: list[Entry] = []
    for entry in entries:
        peer, ours, transform = _full(entry)
        peer = peer_prefix + peer if isinstance(peer, str) else tuple(peer_prefix + p for p in peer)
        out.append((peer, ours_prefix + ours, transform))
    return out


class WeightMap:
    """One peer's layout: converts state dicts to vislang's names (:meth:`to_ours`) and back
    (:meth:`to_peer`). ``ignored`` are peer buffers the model rebuilds (masks, position ids),
    dropped on import and not written on export; ``peer_name`` goes into the error messages."""

    def __init__(self, peer_name: str, entries: Iterable[Entry], ignored: Iterable[str] = ()) -> None:
        self.peer_name = peer_name
        self.rules = [_rule(entry) for entry in entries]
        self.ignored = [_Pattern(p) for p in ignored]

    def to_ours(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A peer state dict under vislang's names (same tensors, reshaped where the layouts differ)."""
        out: dict[str, Tensor] = {}
        pending: dict[str, tuple[_Rule, dict[int, Tensor]]] = {}  # fused names still missing parts
        for key, value in state.items():
            if any(p.match(key) is not None for p in self.ignored):
                continue
            rule, part, values = self._find_peer(key)
            name = rule.ours.fill(values)
            parts = pending.setdefault(name, (rule, {}))[1]
            parts[part] = value
            if len(parts) < len(rule.peer):
                continue
            del pending[name]
            if name in out:
                raise ConfigError(f"{self.peer_name} weights give {name!r} twice")
            out[name] = rule.transform.to_ours([parts[k] for k in range(len(rule.peer))]).contiguous()
        if pending:
            raise ConfigError(f"{self.peer_name} weights lack part of {next(iter(pending))!r}")
        return out

    def to_peer(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A vislang state dict under the peer's names: the inverse of :meth:`to_ours`."""
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            rule, values = self._find_ours(key)
            tensors = rule.transform.to_peer(value)
            for pattern, tensor in zip(rule.peer, tensors, strict=True):
                out[pattern.fill(values)] = tensor.contiguous()
        return out

    def _find_peer(self, key: str) -> tuple[_Rule, int, dict[str, str]]:
        for rule in self.rules:
            for part, pattern in enumerate(rule.peer):
                values = pattern.match(key)
                if values is not None:
                    return rule, part, values
        raise ConfigError(f"unexpected {self.peer_name} weight {key!r}")

    def _find_ours(self, key: str) -> tuple[_Rule, dict[str, str]]:
        for rule in self.rules:
            values = rule.ours.match(key)
            if values is not None:
                return rule, values
        raise ConfigError(f"the vislang weight {key!r} has no {self.peer_name} equivalent")
