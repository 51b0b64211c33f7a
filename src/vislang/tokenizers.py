"""Tokenizers: callables ``tokenizer(list_of_str) -> LongTensor[N, context_length]``.

:class:`BPETokenizer` is a byte-level BPE (Hugging Face ``tokenizers``) that vislang trains on
the run's own captions and saves as ``tokenizer.json`` beside the checkpoints. Every sequence
is ``<sot> tokens... <eot>`` then ``<pad>``; a text too long is cut so that ``<eot>`` stays the
last token, which is where causal text towers pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from vislang.errors import ConfigError

PAD, SOT, EOT = "<pad>", "<sot>", "<eot>"


class BPETokenizer:
    def __init__(self, tokenizer: Tokenizer, context_length: int) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        ids = [tokenizer.token_to_id(t) for t in (PAD, SOT, EOT)]
        if None in ids:
            raise ConfigError(f"tokenizer lacks the special tokens {PAD} {SOT} {EOT}")
        self.pad_id, self.sot_id, self.eot_id = ids

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, context_length: int, lowercase: bool = True) -> BPETokenizer:
        tokenizer = Tokenizer(models.BPE())
        steps = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
        tokenizer.normalizer = normalizers.Sequence(steps)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[PAD, SOT, EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer, context_length)

    @classmethod
    def load(cls, path: str | Path, context_length: int) -> BPETokenizer:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"tokenizer file not found: {path}")
        try:
            return cls(Tokenizer.from_file(str(path)), context_length)
        except Exception as error:  # tokenizers raises plain Exceptions on bad JSON
            raise ConfigError(f"cannot read tokenizer {path}: {error}") from None

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def from_json(cls, text: str, context_length: int) -> BPETokenizer:
        """The tokenizer serialised by :meth:`to_json` (as stored inside checkpoints)."""
        return cls(Tokenizer.from_str(text), context_length)

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        special = {self.pad_id, self.sot_id, self.eot_id}
        return self.tokenizer.decode([i for i in ids if i not in special]).strip()

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        for row, encoding in enumerate(self.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            ids = [self.sot_id, *encoding.ids[: self.context_length - 2], self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out
