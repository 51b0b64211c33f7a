"""A causal language model from a local directory, through transformers (no download, no server).

Why sampling is seeded per (prompt, sample index) rather than by one seed for the run: the
``k``-th text for a prompt is then the same whatever else the run asked before it, in whatever
order or batch, so a rerun (or a run that resumes after the cache kept half its answers) gives
identical texts. The seed is set on torch's generators inside ``torch.random.fork_rng``, so the
caller's random state is left as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vislang.errors import first_line
from vislang.llm.base import Backend, LLMError, Prompt, check_sampling, prompt_text


def sample_seed(seed: int, prompt: str, index: int) -> int:
    """The sampling seed of text ``index`` for ``prompt``: fixed by the three, independent of the run."""
    digest = hashlib.sha256(f"{seed}\0{index}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class LocalBackend(Backend):
    """Texts sampled from the causal LM saved in ``path`` (``save_pretrained`` layout).

    A prompt goes through the tokenizer's chat template when it has one (instruction-tuned
    models expect it), else it is the raw text to continue. ``temperature`` 0 is greedy decoding
    (the ``n`` texts are then equal). Each text is at most ``max_tokens`` new tokens.
    """

    name = "local"

    def __init__(self, path: str | Path, max_tokens: int = 256, device: str = "cpu", seed: int = 0) -> None:
        self.path = Path(path)
        self.max_tokens = max_tokens
        self.seed = seed
        self.device = torch.device(device)
        self.tokenizer, self.model = _load(self.path, self.device)

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": str(self.path), "max_tokens": self.max_tokens, "seed": self.seed}

    def generate(self, prompts: Sequence[Prompt], n: int, temperature: float) -> list[list[str]]:
        check_sampling(n, temperature)
        out = []
        for prompt in prompts:
            text = prompt_text(prompt)
            ids = self._encode(text)
            out.append([self._sample(ids, temperature, sample_seed(self.seed, text, k)) for k in range(n)])
        return out

    def close(self) -> None:
        self.model = None

    def _encode(self, text: str) -> torch.Tensor:
        """The prompt's token ids (1 x length), through the chat template when there is one."""
        tokenizer = self.tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)  # fmt: skip
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(text)["input_ids"]
        if not ids:
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            if start is None:
                raise LLMError(f"{self.path}: the prompt {text[:40]!r} has no tokens and the tokenizer no BOS/EOS")
            ids = [start]
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def _sample(self, ids: torch.Tensor, temperature: float, seed: int) -> str:
        """One text continuing ``ids``, sampled under ``seed`` without touching the caller's RNG."""
        sample = temperature > 0
        options: dict[str, Any] = {"do_sample": sample, "max_new_tokens": self.max_tokens}
        if sample:
            options.update(temperature=temperature, top_k=0, top_p=1.0)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            output = self.model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=pad, **options)
        return self.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True).strip()


def _load(path: Path, device: torch.device) -> tuple[Any, Any]:
    """(tokenizer, model in eval mode on ``device``) from a local directory; problems are one line."""
    if not path.is_dir():
        raise LLMError(f"local model directory not found: {path}")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise LLMError("the local backend needs transformers: pip install 'vislang[hf]'") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise LLMError(f"cannot load a causal language model from {path}: {first_line(error)}") from None
    return tokenizer, model.to(device).eval()
