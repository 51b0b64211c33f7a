"""The config section that chooses a language-model backend, and the one function that opens it.

Every method that needs generated text takes an :class:`LLMConfig` (a command builds one from
its flags, a run config can hold one), so all of them reach the same four backends and the same
cache the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from vislang.config.base import Section
from vislang.llm.base import Backend
from vislang.llm.cache import CachedBackend, GenerationCache
from vislang.llm.http_client import HTTPBackend
from vislang.llm.local import LocalBackend
from vislang.llm.recorded import RecordedBackend
from vislang.llm.world import WorldBackend

BackendKind = Literal["world", "http", "local", "recorded"]


class LLMConfig(Section):
    """Which backend answers, with the fields of each (a field another kind has is ignored)."""

    kind: BackendKind = Field(
        "world",
        description="world (rules for the built-in world, no model), http (an OpenAI-compatible server: vLLM, "
        "llama.cpp, Ollama), local (a causal LM directory through transformers) or recorded (answers replayed "
        "from a JSONL file)",
    )
    base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="http: the server's API root; requests go to BASE_URL/chat/completions"
    )
    model: str | None = Field(None, description="http: the model name the server serves (its 'model' field)")
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="http: the environment variable holding the API key (unset: no Authorization header)",
    )
    timeout: float = Field(60.0, gt=0, allow_inf_nan=False, description="http: seconds one request may take")
    retries: int = Field(
        5, ge=0, description="http: repeats of a request that failed with 429, 5xx, a timeout or no connection"
    )
    backoff: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="http: seconds before the first retry, doubled for each next one"
    )
    max_backoff: float = Field(
        60.0, ge=0, allow_inf_nan=False, description="http: the longest wait between tries (Retry-After included)"
    )
    model_path: str | None = Field(None, description="local: the directory of a saved causal LM and its tokenizer")
    device: str = Field("cpu", description="local: the torch device the model runs on")
    seed: int = Field(0, ge=0, description="local: seed of the sampling (each text's seed derives from it)")
    recorded: str | None = Field(None, description="recorded: the JSONL file of {prompt, texts} (or a cache file)")
    max_tokens: int = Field(256, ge=1, description="http, local: the most tokens a generated text may have")
    temperature: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="the sampling temperature a method asks with (0: greedy)"
    )
    cache: str | None = Field(
        None, description="the JSONL cache of every generation (default: chosen by the method, beside its output)"
    )

    @model_validator(mode="after")
    def _check(self) -> LLMConfig:
        if self.kind == "http" and not self.model:
            raise ValueError("kind http needs model (the name the server serves)")
        if self.kind == "local" and not self.model_path:
            raise ValueError("kind local needs model_path (a directory with a saved causal LM)")
        if self.kind == "recorded" and not self.recorded:
            raise ValueError("kind recorded needs recorded (a JSONL file of prompts and texts)")
        return self


def make_backend(cfg: LLMConfig) -> Backend:
    """The backend ``cfg`` names, without a cache (tests and tools that must see every request)."""
    if cfg.kind == "http":
        return HTTPBackend(cfg.base_url, cfg.model or "", max_tokens=cfg.max_tokens, timeout=cfg.timeout,
                           retries=cfg.retries, backoff=cfg.backoff, max_backoff=cfg.max_backoff,
                           api_key_env=cfg.api_key_env)  # fmt: skip
    if cfg.kind == "local":
        return LocalBackend(cfg.model_path or "", max_tokens=cfg.max_tokens, device=cfg.device, seed=cfg.seed)
    if cfg.kind == "recorded":
        return RecordedBackend(cfg.recorded or "")
    return WorldBackend()


def open_backend(cfg: LLMConfig, default_cache: str | Path) -> CachedBackend:
    """The backend ``cfg`` names behind its cache (``cfg.cache``, else ``default_cache``): the way
    every method asks, so no prompt is ever sent twice. Replaying a cache file into itself adds
    nothing to it."""
    path = Path(cfg.cache or default_cache)
    replaying_itself = cfg.kind == "recorded" and path.resolve() == Path(cfg.recorded or "").resolve()
    cache = GenerationCache(path, writable=not replaying_itself)
    return CachedBackend(make_backend(cfg), cache)
