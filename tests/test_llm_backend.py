"""The language-model backends (vislang.llm): the HTTP client against a loopback server, the cache,
recorded answers, the world's rules and a tiny local causal LM."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from vislang.errors import DataError
from vislang.llm import (
    CachedBackend,
    GenerationCache,
    HTTPBackend,
    LLMConfig,
    LLMError,
    RecordedBackend,
    Request,
    WorldBackend,
)


class ChatServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 for one test. ``script`` holds
    the next answers as (status, body, headers, delay); when it is empty the server answers with
    ``n`` choices (one if ``ignore_n``) whose content names the prompt and a running count."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[tuple[int, object, dict, float]] = []
        self.ignore_n = False
        self.count = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    status, payload, headers, delay = server.script.pop(0) if server.script else server.answer(body)
                time.sleep(delay)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (the timeout test)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def answer(self, body: dict) -> tuple[int, object, dict, float]:
        prompt = body["messages"][0]["content"]
        choices = []
        for _ in range(1 if self.ignore_n else body["n"]):
            self.count += 1
            choices.append(
                {"index": len(choices), "message": {"role": "assistant", "content": f"{prompt} #{self.count}"}}
            )
        return 200, {"object": "chat.completion", "choices": choices}, {}, 0.0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ChatServer()
    yield s
    s.close()


def http_backend(server: ChatServer, **kwargs) -> tuple[HTTPBackend, list[float]]:
    waits: list[float] = []
    options = {"retries": 3, "backoff": 0.5, "timeout": 5.0, "max_tokens": 20, "api_key_env": "VISLANG_TEST_KEY"}
    backend = HTTPBackend(server.url, "tiny-model", sleep=waits.append, **{**options, **kwargs})
    return backend, waits


def test_http_generates_n_texts_per_prompt(server, monkeypatch):
    monkeypatch.delenv("VISLANG_TEST_KEY", raising=False)
    backend, _ = http_backend(server)
    texts = backend.generate(["What does a cat look like?", "Describe a dog"], 3, 0.7)
    assert [len(t) for t in texts] == [3, 3] and texts[0][0].startswith("What does a cat")
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["body"] == {"model": "tiny-model", "messages": [{"role": "user", "content": "What does a cat look like?"}],
                             "temperature": 0.7, "n": 3, "max_tokens": 20}  # fmt: skip
    assert "authorization" not in {k.lower() for k in first["headers"]}


def test_http_sends_the_key_from_the_named_variable(server, monkeypatch):
    monkeypatch.setenv("VISLANG_TEST_KEY", "sk-test")
    backend, _ = http_backend(server)
    backend.generate(["hi"], 1, 1.0)
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-test"


def test_http_asks_again_when_the_server_ignores_n(server):
    server.ignore_n = True
    backend, _ = http_backend(server)
    assert len(backend.generate(["hello"], 4, 1.0)[0]) == 4
    assert [r["body"]["n"] for r in server.requests] == [4, 3, 2, 1]


def test_http_retries_429_honouring_retry_after_and_5xx_with_backoff(server):
    server.script = [(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}, 0.0),
                     (500, b"oops", {}, 0.0), (503, b"", {}, 0.0)]  # fmt: skip
    backend, waits = http_backend(server, max_backoff=60.0)
    assert len(backend.generate(["hello"], 2, 1.0)[0]) == 2
    assert waits == [7.0, 1.0, 2.0]  # Retry-After, then backoff * 2**attempt
    assert len(server.requests) == 4


def test_http_retries_a_timeout_then_succeeds(server):
    server.script = [(200, {"choices": [{"message": {"content": "late"}}]}, {}, 1.5)]
    backend, waits = http_backend(server, timeout=0.3)
    assert backend.generate(["hello"], 1, 1.0)[0][0] == "hello #1"
    assert len(waits) == 1


def test_http_gives_up_after_the_retries_with_one_line(server):
    server.script = [(502, b"bad gateway", {}, 0.0)] * 4
    backend, waits = http_backend(server)
    with pytest.raises(LLMError, match=r"gave up after 4 attempts: HTTP 502") as error:
        backend.generate(["hello"], 1, 1.0)
    assert len(waits) == 3 and "\n" not in str(error.value) and server.url in str(error.value)


def test_http_connection_refused_is_retried_then_one_line():
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []
    backend = HTTPBackend(f"http://127.0.0.1:{port}/v1", "m", retries=2, backoff=0.1, sleep=waits.append)
    with pytest.raises(LLMError, match="cannot connect"):
        backend.generate(["hello"], 1, 1.0)
    assert waits == [0.1, 0.2]


def test_http_client_errors_are_not_retried(server):
    server.script = [(401, {"error": {"message": "invalid API key"}}, {}, 0.0)]
    backend, waits = http_backend(server)
    with pytest.raises(LLMError, match="HTTP 401: 'invalid API key'"):
        backend.generate(["hello"], 1, 1.0)
    assert waits == [] and len(server.requests) == 1


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"<html>not json</html>", "not JSON"),
        ({"choices": []}, "no choices"),
        ({"id": "x"}, "no choices"),
        ({"choices": [{"message": {"content": None}}]}, "content is not a string"),
        ({"choices": [{"text": "completion-style"}]}, "content is not a string"),
    ],
)
def test_http_malformed_response_is_one_error_and_nothing_is_cached(server, tmp_path, payload, needle):
    server.script = [(200, payload, {}, 0.0)]
    cache_path = tmp_path / "cache.jsonl"
    cached = CachedBackend(http_backend(server)[0], GenerationCache(cache_path))
    with pytest.raises(LLMError, match=needle) as error:
        cached.generate(["hello"], 2, 1.0)
    assert "\n" not in str(error.value) and "malformed response" in str(error.value)
    assert not cache_path.exists()


def test_cache_rerun_sends_nothing_and_settings_are_part_of_the_key(server, tmp_path):
    path = tmp_path / "out.cache.jsonl"
    first = CachedBackend(http_backend(server)[0], GenerationCache(path)).generate(["a", "b"], 2, 0.5)
    size = path.read_bytes()
    again = CachedBackend(http_backend(server)[0], GenerationCache(path))
    assert again.generate(["a", "b"], 2, 0.5) == first and len(server.requests) == 2
    assert (again.hits, again.misses) == (2, 0) and path.read_bytes() == size
    again.generate(["a"], 2, 0.9)  # another temperature: asked
    CachedBackend(http_backend(server, max_tokens=99)[0], GenerationCache(path)).generate(["a"], 2, 0.5)
    assert len(server.requests) == 4
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {(r["temperature"], r["max_tokens"]) for r in records} == {(0.5, 20), (0.9, 20), (0.5, 99)}


def test_cache_ignores_and_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    world = CachedBackend(WorldBackend(), GenerationCache(path))
    texts = world.generate(["What does a circle look like?"], 2, 1.0)
    path.write_bytes(path.read_bytes() + b'{"backend": "world", "prompt": "torn')  # a killed writer
    cache = GenerationCache(path)
    assert len(cache) == 1
    again = CachedBackend(WorldBackend(), cache)
    assert again.generate(["What does a circle look like?"], 2, 1.0) == texts and again.hits == 1
    again.generate(["What does a star look like?"], 2, 1.0)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["texts"] for line in lines)


def test_cache_file_that_is_not_a_cache_is_one_line(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n')
    with pytest.raises(DataError, match="record 1 has no list of texts"):
        GenerationCache(path)


def test_recorded_replays_a_file_and_its_own_cache(tmp_path):
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text(json.dumps({"prompt": "Describe a cat", "texts": ["a small furry pet", "whiskers"]}) + "\n")
    backend = RecordedBackend(recorded)
    assert backend.generate(["Describe a cat"], 2, 1.0) == [["a small furry pet", "whiskers"]]
    with pytest.raises(LLMError, match="'Describe a dog' is not recorded"):
        backend.generate(["Describe a dog"], 1, 1.0)
    with pytest.raises(LLMError, match="has 2 recorded texts, 3 asked"):
        backend.generate(["Describe a cat"], 3, 1.0)
    cache = tmp_path / "world.cache.jsonl"
    made = CachedBackend(WorldBackend(), GenerationCache(cache)).generate([Request("concepts", "List a star")], 3, 1.0)
    assert RecordedBackend(cache).generate(["List a star"], 3, 1.0) == made


def test_recorded_bad_record_is_one_line(tmp_path):
    path = tmp_path / "recorded.jsonl"
    path.write_text('{"prompt": "x", "texts": "not a list"}\n')
    with pytest.raises(DataError, match="record 1 must be"):
        RecordedBackend(path)
    with pytest.raises(DataError, match="not found"):
        RecordedBackend(tmp_path / "missing.jsonl")


def test_world_answers_by_kind_and_refuses_other_classes():
    world = WorldBackend()
    (describe,) = world.generate(["What does a triangle look like?"], 3, 1.0)
    assert len(describe) == 3 and all("triangle" in t for t in describe)
    assert world.generate(["What does a triangle look like?"], 3, 0.0) == [describe]  # deterministic
    assert any("three" in t for t in world.generate(["Describe what a triangle looks like"], 6, 1.0)[0])
    (concepts,) = world.generate(["List visual attributes of a triangle"], 2, 1.0)
    lines = concepts[0].splitlines()
    assert "three corners" in lines and "flat base" in lines
    assert concepts[1].splitlines() == lines[1:] + lines[:1]
    assert world.generate([Request("concepts", "a circle")], 1, 1.0)[0][0].splitlines()[0] == "round outline"
    (fine,) = world.generate([Request("fine_grained", "square")], 3, 1.0)
    assert any("diamond" in t for t in fine) and all(t.startswith("A square") for t in fine)
    (summary,) = world.generate(["Summarize these descriptions of stars into one caption: ..."], 1, 1.0)
    assert "star" in summary[0] and "five points" in summary[0]
    (both,) = world.generate([Request("describe", "What does an orange cross look like?")], 4, 1.0)
    assert all(t.startswith("An orange cross") for t in both)
    with pytest.raises(LLMError, match="names no class of the built-in world") as error:
        world.generate(["What does a goldfish look like?"], 1, 1.0)
    assert "goldfish" in str(error.value) and "\n" not in str(error.value)


def test_unknown_kind_and_bad_sampling_are_refused():
    with pytest.raises(LLMError, match="unknown prompt kind"):
        Request("poem", "a circle")
    with pytest.raises(LLMError, match="n .* must be a positive integer"):
        WorldBackend().generate(["a circle"], 0, 1.0)


def test_config_section_names_what_each_kind_needs():
    from pydantic import ValidationError

    assert LLMConfig().kind == "world"
    for kind, needle in [("http", "needs model"), ("local", "needs model_path"), ("recorded", "needs recorded")]:
        with pytest.raises(ValidationError, match=needle):
            LLMConfig(kind=kind)
    with pytest.raises(ValidationError, match="extra"):
        LLMConfig(kind="world", modle="x")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A randomly initialised one-layer GPT-2 and a word-level tokenizer, saved like a real model."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = "[UNK] [PAD] [EOS] a an the circle square star red blue what does look like describe is of".split()
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                                eos_token="[EOS]")  # fmt: skip
    config = transformers.GPT2Config(vocab_size=len(words), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                     bos_token_id=2, eos_token_id=2, pad_token_id=1)  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_lm")
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_local_lm_samples_n_texts_deterministically(tiny_lm):
    from vislang.llm import LocalBackend

    backend = LocalBackend(tiny_lm, max_tokens=6)
    prompts = ["what does a circle look like", "describe a red star"]
    state = torch.random.get_rng_state()
    texts = backend.generate(prompts, 3, 1.0)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    assert [len(t) for t in texts] == [3, 3] and all(isinstance(s, str) for t in texts for s in t)
    assert len(set(texts[0])) > 1  # sampled: the texts differ
    assert LocalBackend(tiny_lm, max_tokens=6).generate(prompts[::-1], 3, 1.0) == texts[::-1]
    assert backend.generate(prompts[:1], 1, 1.0)[0][0] == texts[0][0]  # text k does not depend on n
    greedy = backend.generate(prompts[:1], 2, 0.0)[0]
    assert greedy[0] == greedy[1]
    assert LocalBackend(tiny_lm, max_tokens=6, seed=1).generate(prompts, 3, 1.0) != texts


def test_local_lm_uses_the_chat_template(tiny_lm, tmp_path):
    import shutil

    from vislang.llm import LocalBackend

    chat = tmp_path / "chat"
    shutil.copytree(tiny_lm, chat)
    settings = json.loads((chat / "tokenizer_config.json").read_text())
    settings["chat_template"] = "{% for m in messages %}what does {{ m['content'] }} look like{% endfor %}"
    (chat / "tokenizer_config.json").write_text(json.dumps(settings))
    backend = LocalBackend(chat, max_tokens=4)
    assert backend.tokenizer.chat_template
    assert backend._encode("a star").tolist() == [backend.tokenizer("what does a star look like")["input_ids"]]
    assert len(backend.generate(["a star"], 2, 1.0)[0]) == 2


def test_local_lm_missing_directory_is_one_line(tmp_path):
    from vislang.llm import LocalBackend

    with pytest.raises(LLMError, match="local model directory not found"):
        LocalBackend(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LLMError, match="cannot load a causal language model") as error:
        LocalBackend(tmp_path / "empty")
    assert "\n" not in str(error.value)
