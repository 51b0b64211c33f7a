"""An OpenAI-compatible chat-completions client: what vLLM, llama.cpp's server and Ollama serve.

Why this one protocol: every common way of serving an open model locally speaks it, so one small
client reaches all of them (and hosted APIs) without a vendor SDK. Each prompt is sent as one user
message to ``POST {base_url}/chat/completions``; the texts are ``choices[i].message.content``.

Servers differ in small ways the client absorbs: some ignore ``n`` and return one choice, so the
client asks again until it has ``n`` texts; overloaded ones answer 429 or 5xx, or drop the
connection, so those are retried with exponential back-off (a ``Retry-After`` header, in seconds or
as a date, is honoured instead). Anything else that is not an answer (another 4xx, a body that is
not JSON, no choices, content that is not a string) stops the run with one line naming the URL, and
nothing of that prompt is stored.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from vislang.errors import first_line
from vislang.llm.base import Backend, LLMError, Prompt, check_sampling, prompt_text, short


class HTTPBackend(Backend):
    """Chat completions from a server at ``base_url`` (for example ``http://127.0.0.1:8000/v1``).

    ``retries`` is how many times a failed request is repeated (429, 5xx, connection errors and
    timeouts) after waiting ``backoff * 2**k`` seconds (at most ``max_backoff``); ``timeout`` bounds
    each request in seconds. The API key is read from the environment variable ``api_key_env``
    names when the backend is made (no variable set: no ``Authorization`` header, as local servers
    expect). ``sleep`` is how the back-off waits (replaceable in tests).
    """

    name = "http"

    def __init__(
        self,
        base_url: str,
        model: str,
        max_tokens: int = 256,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        api_key_env: str = "OPENAI_API_KEY",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise LLMError(f"base URL {base_url!r} must start with http:// or https://")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_tokens = max_tokens
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env, "").strip() if api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), headers=headers)

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "max_tokens": self.max_tokens}

    def generate(self, prompts: Sequence[Prompt], n: int, temperature: float) -> list[list[str]]:
        check_sampling(n, temperature)
        return [self._texts(prompt_text(prompt), n, temperature) for prompt in prompts]

    def close(self) -> None:
        self._client.close()

    def _texts(self, prompt: str, n: int, temperature: float) -> list[str]:
        """``n`` texts for one prompt, asking again while a server returns fewer than asked."""
        texts: list[str] = []
        while len(texts) < n:
            body = {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": temperature,
                "n": n - len(texts),
                "max_tokens": self.max_tokens,
            }
            texts.extend(self._choices(self._post(body), prompt))
        return texts[:n]

    def _post(self, body: dict[str, Any]) -> Any:
        """The parsed JSON answer to one request, after the retries a transient failure allows."""
        last = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2**attempt
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                last = f"timed out after {self._client.timeout.read}s"
            except httpx.TransportError as error:
                last = f"cannot connect ({first_line(error)})"
            else:
                if response.status_code < 300:
                    try:
                        return response.json()
                    except ValueError:
                        raise LLMError(f"{self.url}: malformed response (not JSON)") from None
                if not _transient(response.status_code):
                    raise LLMError(f"{self.url}: HTTP {response.status_code}{_server_message(response)}")
                last = f"HTTP {response.status_code}{_server_message(response)}"
                wait = _retry_after(response.headers.get("Retry-After"), wait)
            if attempt < self.retries:
                self.sleep(min(max(wait, 0.0), self.max_backoff))
        tries = self.retries + 1
        raise LLMError(f"{self.url}: gave up after {tries} attempt{'s' if tries > 1 else ''}: {last}")

    def _choices(self, data: Any, prompt: str) -> list[str]:
        """The texts of one answer; anything not shaped like a chat completion is an error."""
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise LLMError(f"{self.url}: malformed response (no choices) to prompt {short(prompt)}")
        texts = []
        for i, choice in enumerate(choices):
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                raise LLMError(f"{self.url}: malformed response (choices[{i}].message.content is not a string)")
            texts.append(content)
        return texts


def _transient(status: int) -> bool:
    """Whether a status says "try again later" (rate limited, or the server is failing)."""
    return status == 429 or status >= 500


def _retry_after(value: str | None, default: float) -> float:
    """Seconds a ``Retry-After`` header asks to wait (a number or an HTTP date), else ``default``."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def _server_message(response: httpx.Response) -> str:
    """The server's own error message, shortened to one line, if its body has one."""
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip()
        return f": {short(text)}" if text else ""
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return f": {short(str(message))}" if message else ""
