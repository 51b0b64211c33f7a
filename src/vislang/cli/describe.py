"""``vislang describe``: CuPL class descriptions from a language model, for zero-shot evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from vislang.cli.common import non_negative_int, positive_int
from vislang.errors import ConfigError

if TYPE_CHECKING:
    from vislang.llm import LLMConfig

# The flags that must come with each backend, and what they are.
_NEEDS = {"http": ("model", "--model NAME"), "local": ("model_path", "--model-path DIR"),
          "recorded": ("recorded", "--recorded FILE")}  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "describe",
        help="write CuPL descriptions of classes with a language model",
        description="Ask a language model CuPL's questions (Pratt et al. 2023) about each class, N answers per "
        "question, and write the cleaned answers as {class name: [descriptions]} JSON, the descriptions file "
        "the zero-shot task reads (dataset descriptions: with prompts: descriptions or both). Every answer goes "
        "through a JSONL cache, so a rerun asks nothing again and writes the same file.",
    )
    p.add_argument(
        "classes",
        metavar="CLASSES",
        help="a file of class names (one a line, or a .json list) or a shipped class-name set (e.g. cifar10)",
    )
    p.add_argument("--out", required=True, help="the descriptions JSON to write (written atomically)")
    p.add_argument("--n", type=positive_int, default=10, help="answers asked per question (default 10, as CuPL)")
    add_backend_options(p, 0.99, 50)  # CuPL's sampling
    p.set_defaults(func=run)


def add_backend_options(p: argparse.ArgumentParser, temperature: float, max_tokens: int) -> None:
    """The language-model flags every command that generates text shares (read by
    :func:`backend_config`); ``temperature`` and ``max_tokens`` are the command's defaults."""
    p.add_argument(
        "--backend",
        choices=["world", "http", "local", "recorded"],
        default="world",
        help="world (rules for the built-in world), http (an OpenAI-compatible server), local (a causal "
        "LM directory) or recorded (answers replayed from a JSONL file) (default world)",
    )
    p.add_argument("--base-url", help="http: the API root, e.g. http://127.0.0.1:8000/v1 (the default)")
    p.add_argument("--model", help="http: the model name the server serves")
    p.add_argument("--api-key-env", help="http: environment variable holding the API key (default OPENAI_API_KEY)")
    p.add_argument("--timeout", type=float, help="http: seconds one request may take (default 60)")
    p.add_argument(
        "--retries", type=non_negative_int, help="http: repeats after 429, 5xx or a lost connection (default 5)"
    )
    p.add_argument("--model-path", help="local: directory of a saved causal LM (transformers)")
    p.add_argument("--device", help="local: torch device (default cpu)")
    p.add_argument("--seed", type=int, help="local: sampling seed (default 0)")
    p.add_argument("--recorded", help="recorded: JSONL file of {prompt, texts} records, or a cache file")
    p.add_argument(
        "--temperature", type=float, default=temperature, help=f"sampling temperature (default {temperature})"
    )
    p.add_argument(
        "--max-tokens", type=positive_int, default=max_tokens, help=f"tokens per answer (default {max_tokens})"
    )
    p.add_argument("--cache", help="the generation cache (default: OUT with .cache.jsonl)")


def backend_config(args: argparse.Namespace) -> LLMConfig:
    """The :class:`vislang.llm.LLMConfig` the flags describe; a missing or bad flag is one line."""
    from pydantic import ValidationError

    from vislang.config.base import format_error
    from vislang.llm import LLMConfig

    need = _NEEDS.get(args.backend)
    if need and not getattr(args, need[0]):
        raise ConfigError(f"describe --backend {args.backend} needs {need[1]}")
    flags = {
        "kind": args.backend, "base_url": args.base_url, "model": args.model, "api_key_env": args.api_key_env,
        "timeout": args.timeout, "retries": args.retries, "model_path": args.model_path, "device": args.device,
        "seed": args.seed, "recorded": args.recorded, "temperature": args.temperature,
        "max_tokens": args.max_tokens, "cache": args.cache,
    }  # fmt: skip
    try:
        return LLMConfig(**{key: value for key, value in flags.items() if value is not None})
    except ValidationError as error:
        raise ConfigError(format_error(error, "describe")) from None


def run(args: argparse.Namespace) -> int:
    from vislang.llm import describe_classes, open_backend
    from vislang.llm.cupl import read_classes, write_json_atomic

    cfg = backend_config(args)
    classnames = read_classes(args.classes)
    out = Path(args.out)
    with open_backend(cfg, out.with_suffix(".cache.jsonl")) as backend:
        descriptions = describe_classes(backend, classnames, args.n, cfg.temperature)
    write_json_atomic(descriptions, out)
    total = sum(len(texts) for texts in descriptions.values())
    print(f"wrote {total} descriptions of {len(descriptions)} classes to {out} "
          f"({backend.hits} prompts from the cache {backend.cache.path}, {backend.misses} asked)")  # fmt: skip
    return 0
