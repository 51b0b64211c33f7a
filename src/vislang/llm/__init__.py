"""Generated text: one small backend interface (prompts in, texts out) with a cache on disk.

Every method that needs text from a language model (CuPL's class descriptions, GIST's
fine-grained descriptions, LaBo's concepts) asks through :meth:`Backend.generate` for ``n`` texts
per prompt, so the same method runs against a server (vLLM, llama.cpp, Ollama, any
OpenAI-compatible API), a local checkpoint, a file of recorded answers, or the rules of the
built-in world, and every answer goes through one JSONL cache. ``docs/llm.md`` has the details.
"""

from vislang.llm.base import PROMPT_KINDS, Backend, LLMError, Prompt, PromptKind, Request, prompt_text
from vislang.llm.cache import CachedBackend, GenerationCache
from vislang.llm.config import LLMConfig, make_backend, open_backend
from vislang.llm.cupl import CUPL_QUESTIONS, clean_descriptions, cupl_requests, describe_classes
from vislang.llm.http_client import HTTPBackend
from vislang.llm.local import LocalBackend
from vislang.llm.recorded import RecordedBackend
from vislang.llm.world import WorldBackend

__all__ = [
    "CUPL_QUESTIONS",
    "PROMPT_KINDS",
    "Backend",
    "CachedBackend",
    "GenerationCache",
    "HTTPBackend",
    "LLMConfig",
    "LLMError",
    "LocalBackend",
    "Prompt",
    "PromptKind",
    "RecordedBackend",
    "Request",
    "WorldBackend",
    "clean_descriptions",
    "cupl_requests",
    "describe_classes",
    "make_backend",
    "open_backend",
    "prompt_text",
]
