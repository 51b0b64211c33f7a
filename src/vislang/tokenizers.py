"""Tokenizers: callables ``tokenizer(list_of_str) -> LongTensor[N, context_length]``.

:class:`BPETokenizer` is a byte-level BPE (Hugging Face ``tokenizers``), either trained on the
run's own captions or built from OpenAI CLIP's merges file (:meth:`BPETokenizer.openai`: the
same ids as OpenAI's and OpenCLIP's tokenizer), and saved as ``tokenizer.json`` beside the
checkpoints. Every sequence is ``<sot> tokens... <eot>`` then padding; a text too long is cut
so that ``<eot>`` stays the last token, which is where causal text towers pool.
"""

from __future__ import annotations

import gzip
import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from vislang.errors import ConfigError, first_line
from vislang.files import read_json
from vislang.tokenizer_phrases import PhraseMatcher, clean_phrases, normalise

PAD, SOT, EOT = "<pad>", "<sot>", "<eot>"
OPENAI_SOT, OPENAI_EOT = "<|startoftext|>", "<|endoftext|>"
# OpenAI CLIP's pre-tokenisation: English contractions, letter runs, single digits, runs of other
# non-space characters (whitespace separates and is dropped). As in OpenCLIP, a special token's
# name written in a caption is ordinary text.
OPENAI_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
OPENAI_MERGES = 49152 - 256 - 2  # merges OpenAI's vocabulary uses (the file holds more)


def byte_alphabet() -> list[str]:
    """GPT-2's reversible byte -> printable character map, in OpenAI's vocabulary order: the
    printable Latin-1 bytes first (standing for themselves), then the other bytes in byte order
    (taking code points from 256 upwards)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def openai_clean(text: str) -> str:
    """OpenAI CLIP's text cleaning: ftfy repairs, HTML entities unescaped (twice, as the original
    does), whitespace runs collapsed, stripped, lower-cased."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def _hf_tokenizer(path: Path) -> Tokenizer:
    """A Hugging Face ``tokenizer.json``; missing, empty or broken is one line naming it."""
    read_json(path, "tokenizer file", ConfigError)
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises plain Exceptions
        raise ConfigError(f"{path}: not a Hugging Face tokenizer ({first_line(error)})") from None


class BPETokenizer:
    """A Hugging Face ``tokenizers`` model behind vislang's tokenizer interface. ``kind``:
    "trained" (a byte-level BPE, specials ``<pad> <sot> <eot>``), "openai" (``<|startoftext|>``,
    ``<|endoftext|>``, padding with id 0 as OpenAI and OpenCLIP do, text cleaned first) or
    "pretrained" (a pretrained encoder's own tokenizer, e.g. WordPiece with ``[CLS] [SEP] [PAD]``,
    named in ``specials``)."""

    def __init__(
        self, tokenizer: Tokenizer, context_length: int, kind: str = "trained", specials: dict | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.kind = kind
        if kind == "openai":
            self.specials = {"sot": OPENAI_SOT, "eot": OPENAI_EOT}
        else:
            self.specials = dict(specials or {"sot": SOT, "eot": EOT, "pad": PAD})
        ids = {role: tokenizer.token_to_id(name) for role, name in self.specials.items()}
        missing = [self.specials[role] for role, i in ids.items() if i is None]
        if missing:
            raise ConfigError(f"tokenizer lacks the special tokens {' '.join(missing)}")
        # Some encoders' texts have no start token (SigLIP: the text, then </s>, then padding).
        self.sot_id, self.eot_id = ids.get("sot"), ids["eot"]
        self.pad_id = ids.get("pad", 0)

    @classmethod
    def pretrained(cls, directory: str | Path, context_length: int) -> BPETokenizer:
        """The tokenizer of a Hugging Face model directory (``tokenizer.json`` and
        ``special_tokens_map.json``): its CLS/BOS token starts a text, SEP/EOS ends it."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigError(f"pretrained model directory not found: {directory}")
        tokenizer = _hf_tokenizer(directory / "tokenizer.json")
        names = read_json(directory / "special_tokens_map.json", "special-tokens file", ConfigError)
        if not isinstance(names, dict):
            raise ConfigError(f"{directory / 'special_tokens_map.json'}: not a JSON object of special tokens")

        def name(*keys: str, required: bool = True) -> str | None:
            for key in keys:
                value = names.get(key)
                value = value.get("content") if isinstance(value, dict) else value
                if value and isinstance(value, str):
                    return value
            if not required:
                return None
            raise ConfigError(f"{directory / 'special_tokens_map.json'} names no {' or '.join(keys)}")

        tokenizer.no_truncation()
        tokenizer.no_padding()
        specials = {"eot": name("sep_token", "eos_token"), "pad": name("pad_token")}
        start = name("cls_token", "bos_token", required=False)
        if start is not None:
            specials["sot"] = start
        try:
            return cls(tokenizer, context_length, kind="pretrained", specials=specials)
        except ConfigError as error:
            raise ConfigError(f"{directory / 'tokenizer.json'}: {error}") from None

    @classmethod
    def openai(cls, merges_path: str | Path, context_length: int = 77) -> BPETokenizer:
        """OpenAI CLIP's tokenizer from its merges file (``bpe_simple_vocab_16e6.txt.gz``, gzipped
        or not, as OpenAI and OpenCLIP ship it): token ids equal theirs for any text."""
        path = Path(merges_path)
        try:
            raw = path.read_bytes()
            text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError) as error:
            raise ConfigError(f"cannot read the BPE merges file {path}: {error}") from None
        merges = [tuple(line.split()) for line in text.split("\n")[1 : OPENAI_MERGES + 1]]
        if len(merges) != OPENAI_MERGES or any(len(m) != 2 for m in merges):
            raise ConfigError(f"{path} is not OpenAI CLIP's BPE merges file ({len(merges)} merges)")
        alphabet = byte_alphabet()
        tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [OPENAI_SOT, OPENAI_EOT]
        vocab = {token: i for i, token in enumerate(tokens)}
        tokenizer = Tokenizer(
            models.BPE(vocab, merges, end_of_word_suffix="</w>", continuing_subword_prefix="", fuse_unk=False)
        )
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(OPENAI_PATTERN), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tokenizer.decoder = decoders.Sequence([decoders.Replace("</w>", " "), decoders.ByteLevel()])
        return cls(tokenizer, context_length, kind="openai")

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
        """A ``tokenizer.json`` written by :meth:`save`; a missing or broken file is one line naming it."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"tokenizer file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
            if not text.strip():
                raise ConfigError("the file is empty")
            return cls.from_json(text, context_length)
        except (OSError, UnicodeDecodeError, ConfigError) as error:
            raise ConfigError(f"cannot read tokenizer {path}: {first_line(error)}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_json(cls, text: str, context_length: int) -> BPETokenizer:
        """The tokenizer serialised by :meth:`to_json` (as stored inside checkpoints): the Hugging
        Face tokenizer JSON, with vislang's ``kind`` beside its keys. Text that is not one is a
        :class:`ConfigError` (one line)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as error:
            raise ConfigError(f"not a tokenizer: not valid JSON ({first_line(error)})") from None
        if not isinstance(data, dict):
            raise ConfigError("not a tokenizer: the JSON is not an object")
        kind, specials = data.pop("vislang_kind", "trained"), data.pop("vislang_specials", None)
        phrases, lowercase = data.pop("vislang_phrases", None), data.pop("vislang_lowercase", True)
        if kind not in ("trained", "openai", "pretrained", "regex") or not isinstance(specials, (dict, type(None))):
            raise ConfigError(f"not a tokenizer: unknown vislang_kind {kind!r} or vislang_specials")
        if kind == "regex" and not (isinstance(phrases, list) and all(isinstance(p, str) for p in phrases)):
            raise ConfigError("not a tokenizer: a regex tokenizer needs vislang_phrases, a list of strings")
        try:
            tokenizer = Tokenizer.from_str(json.dumps(data))
        except Exception as error:  # tokenizers raises plain Exceptions
            raise ConfigError(f"not a tokenizer ({first_line(error)})") from None
        if kind == "regex":
            return PhraseTokenizer(tokenizer, context_length, phrases, bool(lowercase))
        return cls(tokenizer, context_length, kind, specials)

    def to_json(self) -> str:
        extra = {"vislang_kind": self.kind, "vislang_specials": self.specials}
        return json.dumps({**json.loads(self.tokenizer.to_str()), **extra})

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def _clean(self, texts: list[str]) -> list[str]:
        return [openai_clean(t) for t in texts] if self.kind == "openai" else texts

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(self._clean([text])[0], add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        if self.eot_id in ids:
            ids = ids[: ids.index(self.eot_id)]  # what follows the end (padding) is not text
        special = {self.sot_id} if self.kind == "openai" else {self.pad_id, self.sot_id}
        return " ".join(self.tokenizer.decode([i for i in ids if i not in special]).split())

    def encode_all(self, texts: list[str]) -> list[list[int]]:
        """The ids of every text, without specials (one batched call)."""
        return [e.ids for e in self.tokenizer.encode_batch(self._clean(texts), add_special_tokens=False)]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        start = [] if self.sot_id is None else [self.sot_id]
        for row, encoded in enumerate(self.encode_all(list(texts))):
            ids = [*start, *encoded[: self.context_length - 1 - len(start)], self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


BYTE_ALPHABET = 256  # ids a byte-level BPE needs before its first merge


class PhraseTokenizer(BPETokenizer):
    """``kind: regex``: each domain phrase is one token, the free text between phrases goes
    through a byte-level BPE trained on that free text. Ids: the BPE's (its specials
    ``<pad> <sot> <eot>`` first), then one per phrase, so :attr:`vocab_size` counts all three.
    Decoding gives back :meth:`normalise` of the text exactly (whitespace made single spaces,
    lower-cased when ``lowercase``)."""

    def __init__(
        self, tokenizer: Tokenizer, context_length: int, phrases: Sequence[str], lowercase: bool = True
    ) -> None:
        super().__init__(tokenizer, context_length, kind="trained")
        self.kind, self.lowercase = "regex", lowercase
        self.matcher = PhraseMatcher(clean_phrases(phrases, lowercase))
        self.phrase_offset = tokenizer.get_vocab_size()

    @classmethod
    def train_phrases(
        cls, texts: Iterable[str], phrases: Sequence[str], vocab_size: int, context_length: int, lowercase: bool = True
    ) -> PhraseTokenizer:
        """The tokenizer of ``phrases`` whose BPE fills the rest of ``vocab_size`` (all ids, the
        phrases and specials included), trained on the free text of ``texts``."""
        phrases = clean_phrases(phrases, lowercase)
        room = vocab_size - len(phrases) - 3
        if room < BYTE_ALPHABET:
            raise ConfigError(
                f"tokenizer.vocab_size {vocab_size} leaves {room} BPE ids beside {len(phrases)} phrases and 3 specials; "
                f"a byte-level BPE needs at least {BYTE_ALPHABET}: raise vocab_size or use fewer phrases"
            )
        matcher = PhraseMatcher(phrases)
        free = matcher.free_text(normalise(t, lowercase) for t in texts)
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - len(phrases),
            special_tokens=[PAD, SOT, EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(free, trainer)
        return cls(tokenizer, context_length, phrases, lowercase)

    @property
    def phrases(self) -> list[str]:
        return self.matcher.phrases

    @property
    def vocab_size(self) -> int:
        return self.phrase_offset + len(self.phrases)

    def normalise(self, text: str) -> str:
        """What decoding the ids of ``text`` gives back."""
        return normalise(text, self.lowercase)

    def to_json(self) -> str:
        extra = {"vislang_kind": "regex", "vislang_phrases": self.phrases, "vislang_lowercase": self.lowercase}
        return json.dumps({**json.loads(self.tokenizer.to_str()), **extra})

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self.matcher.pieces(self.normalise(text)):
            if isinstance(piece, int):
                ids.append(self.phrase_offset + piece)
            else:
                ids.extend(self.tokenizer.encode(piece, add_special_tokens=False).ids)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        if self.eot_id in ids:
            ids = ids[: ids.index(self.eot_id)]  # what follows the end (padding) is not text
        parts, run = [], []
        for i in ids:
            if i >= self.phrase_offset:
                parts.append(self.tokenizer.decode(run))
                run = []
                if i < self.vocab_size:
                    parts.append(" " + self.phrases[i - self.phrase_offset])
            elif i not in (self.pad_id, self.sot_id):
                run.append(i)
        text = "".join([*parts, self.tokenizer.decode(run)])
        return text[1:] if text.startswith(" ") else text

    def encode_all(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]
