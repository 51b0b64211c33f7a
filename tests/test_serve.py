"""`vislang serve`: every endpoint answers what SearchIndex answers for the same query, thumbnails
are the index's own bytes looked up by id, every bad input is a clean 4xx after which the server
keeps serving, a loopback server holds concurrent clients without an error, and the command starts
on loopback. The page in a real browser is tests/test_serve_browser.py."""

from __future__ import annotations

import asyncio
import io
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from index_helpers import build_test_index, shapes_collection
from vislang.cli.serve import exposure_warning
from vislang.search.searcher import SearchIndex
from vislang.serve.app import create_app, warm_up
from vislang.serve.limits import BodyLimit, ServeOptions

OPTIONS = ServeOptions(max_upload_bytes=256 * 1024, max_pixels=200_000, max_k=50, max_classes=20)
GOOD = "/api/search?q=a%20red%20circle&k=3"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with a little real zero data (a bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (3 * width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def make_index(tmp_path_factory, run) -> tuple[SearchIndex, list[Image.Image]]:
    """An 18-image index of drawn shapes (some rows without captions) under the model ``run``."""
    images, captions = shapes_collection()
    root = tmp_path_factory.mktemp("index")
    build_test_index(root, run, images, captions, part_size=5)
    index = SearchIndex(root)
    warm_up(index)
    return index, images


class LiveServer:
    """The app under uvicorn on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


def raw(port: int, request: bytes, body_chunks: list[bytes] = ()) -> bytes:
    """Send bytes exactly as given (no client-side path normalisation) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            conn.sendall(request)
            for piece in body_chunks:
                if select.select([conn], [], [], 0)[0]:
                    break  # the server has answered (or closed) before the body ended
                conn.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a server that refuses early may close while we still send; its answer is still queued
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            try:
                data = conn.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return answer


def _length(answer: bytes) -> int:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    return next((int(line.split(":")[1]) for line in head.splitlines() if line.startswith("content-length:")), 0)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_run):
    index, images = make_index(tmp_path_factory, tiny_run)
    return index, images, TestClient(create_app(index, OPTIONS))


@pytest.fixture(scope="module")
def live(served):
    with LiveServer(create_app(served[0], OPTIONS)) as server:
        yield server


def same_hits(results: list[dict], hits) -> bool:
    ids = [r["id"] for r in results] == [h.id for h in hits]
    rest = [(r["key"], r["caption"], r["thumb"]) for r in results] == [
        (h.key, h.caption, f"/api/thumb/{h.id}") for h in hits
    ]
    return ids and rest and np.allclose([r["score"] for r in results], [h.score for h in hits], atol=1e-5)


def assert_still_serving(client) -> None:
    answer = client.get(GOOD)
    assert answer.status_code == 200 and len(answer.json()["results"]) == 3


def test_page_and_info(served):
    index, images, client = served
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="q"' in page.text and 'id="file"' in page.text and 'id="classes"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    info = client.get("/api/info").json()
    assert info["count"] == len(images) == len(index) and info["has_captions"] is True
    assert info["model"] == index.manifest["model"] and info["max_k"] == OPTIONS.max_k


def test_text_search_is_searchindex_by_get_and_by_json(served):
    index, _, client = served
    for q, k in [("a red circle", 5), ("green square", 18), ("blue", 1)]:
        expected = index.text_to_images(q, k)
        got = client.get("/api/search", params={"q": q, "k": k}).json()["results"]
        assert same_hits(got, expected) and [r["rank"] for r in got] == list(range(1, k + 1))
        assert same_hits(client.post("/api/search", json={"q": q, "k": k}).json()["results"], expected)


def test_image_search_both_ways_and_labels_are_searchindex(served):
    index, images, client = served
    upload = {"file": ("query.png", png_bytes(images[7]), "image/png")}
    got = client.post("/api/search/image", files=upload, data={"k": "4"}).json()["results"]
    assert same_hits(got, index.image_to_images(images[7], 4))
    got = client.post("/api/search/image", files=upload, data={"k": "4", "to": "text"}).json()["results"]
    assert same_hits(got, index.image_to_texts(images[7], 4)) and all(r["caption"] for r in got)
    names = ["red circle", "blue square", "green circle"]
    got = client.post("/api/labels", files=upload, data={"classes": "red circle, blue square\ngreen circle,,"})
    expected = index.labels(images[7], names)
    assert [label["name"] for label in got.json()["labels"]] == [name for name, _ in expected]
    assert [label["prob"] for label in got.json()["labels"]] == pytest.approx([p for _, p in expected], abs=1e-5)


def test_thumbnails_are_the_index_bytes_by_id(served):
    index, images, client = served
    for id_ in (0, 4, 5, len(images) - 1):  # across parts of 5
        answer = client.get(f"/api/thumb/{id_}")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        assert answer.content == index.thumbnail(id_)
    missing = client.get(f"/api/thumb/{len(images)}")
    assert missing.status_code == 404 and "no image with id" in missing.json()["error"]


BAD_UPLOADS = {
    "not an image": (b"this is text, not an image", 400, "not an image"),
    "empty": (b"", 400, "empty"),
    "truncated": ("TRUNCATED", 400, "not a readable image"),
    "eps (external decoder)": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n", 400, "supported"),
    "too many pixels": ("BIG", 400, "pixel limit"),
    "bomb 30000x30000": (png_declaring(30000, 30000), 400, "not a readable image"),
    "bomb 10000x10000": (png_declaring(10000, 10000), 400, "pixel limit"),
    "over the upload limit": (b"\x89PNG" + b"\0" * OPTIONS.max_upload_bytes, 413, "MiB limit"),
    "over the body limit": (b"\x89PNG" + b"\0" * 2 * OPTIONS.max_upload_bytes, 413, "MiB limit"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
@pytest.mark.parametrize("endpoint", ["/api/search/image", "/api/labels"])
def test_bad_uploads_are_a_clean_4xx_and_the_server_goes_on(served, case, endpoint):
    index, images, client = served
    data, status, message = BAD_UPLOADS[case]
    if data == "TRUNCATED":
        whole = png_bytes(Image.effect_noise((64, 64), 60).convert("RGB"))
        data = whole[: len(whole) // 2]
    elif data == "BIG":
        data = png_bytes(Image.new("RGB", (600, 600)))
    answer = client.post(endpoint, files={"file": ("x.png", data, "image/png")}, data={"classes": "a, b"})
    assert answer.status_code == status and message in answer.json()["error"], answer.text
    assert "\n" not in answer.json()["error"]
    assert_still_serving(client)


@pytest.mark.parametrize(
    "method, url, kwargs, status",
    [
        ("get", "/api/search?k=3", {}, 422),  # no q
        ("get", "/api/search?q=%20%20&k=3", {}, 422),
        ("get", "/api/search?q=a&k=0", {}, 422),
        ("get", "/api/search?q=a&k=51", {}, 422),
        ("get", "/api/search?q=a&k=ten", {}, 422),
        ("get", "/api/search?q=" + "a" * 1001, {}, 422),
        ("post", "/api/search", {"content": b'{"q": "a red', "headers": {"content-type": "application/json"}}, 400),
        ("post", "/api/search", {"content": b"\xff\xfe{", "headers": {"content-type": "application/json"}}, 400),
        ("post", "/api/search", {"json": {"q": 5}}, 422),
        ("post", "/api/search", {"json": ["a red circle"]}, 422),
        ("post", "/api/search", {"json": {"q": "a", "k": 3, "extra": 1}}, 422),
        ("post", "/api/search", {"content": b"q=a", "headers": {"content-type": "text/plain"}}, 422),
        ("post", "/api/search/image", {"data": {"k": "3"}}, 422),  # no file
        ("post", "/api/search/image", {"files": {"file": ("a.png", "PNG")}, "data": {"to": "sideways"}}, 422),
        ("post", "/api/search/image", {"files": {"file": ("a.png", "PNG")}, "data": {"k": "0"}}, 422),
        ("post", "/api/labels", {"files": {"file": ("a.png", "PNG")}, "data": {"classes": " , \n"}}, 422),
        ("post", "/api/labels", {"files": {"file": ("a.png", "PNG")}, "data": {"classes": ",".join("x" * 30)}}, 200),
        (
            "post",
            "/api/labels",
            {"files": {"file": ("a.png", "PNG")}, "data": {"classes": ",".join(map(str, range(21)))}},
            422,
        ),  # fmt: skip
        ("get", "/api/nothing", {}, 404),
        ("delete", "/api/search", {}, 405),
    ],
)
def test_bad_requests_are_a_clean_4xx_and_the_server_goes_on(served, method, url, kwargs, status):
    index, images, client = served
    for form in kwargs.get("files", {}).values():
        if form[1] == "PNG":
            kwargs["files"] = {"file": ("a.png", png_bytes(images[0]), "image/png")}
    answer = getattr(client, method)(url, **kwargs)
    assert answer.status_code == status, answer.text
    if status >= 400:
        assert answer.json()["error"] and "\n" not in answer.json()["error"]
    assert_still_serving(client)


PATHS = ["../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd",
         "..\\..\\etc\\passwd", "-1", "1.5", "0x1", "1e3", "abc", "1%00", "99999999999999999999999", "%20", ""]  # fmt: skip


@pytest.mark.parametrize("path", PATHS)
def test_path_like_thumbnail_ids_are_4xx_on_a_real_server(served, live, path):
    answer = raw(live.port, f"GET /api/thumb/{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status = int(answer.split()[1])
    assert 400 <= status < 500 and b"root:" not in answer and b"application/json" in answer, answer[:300]
    assert_still_serving(served[2])


def test_a_declared_oversized_body_is_refused_before_it_is_sent(live):
    head = (f"POST /api/search/image HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {1 << 30}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    answer = raw(live.port, head)  # not one byte of the promised gigabyte is sent
    assert answer.startswith(b"HTTP/1.1 413") and b"MiB limit" in answer
    assert httpx.get(live.url + GOOD).status_code == 200


def test_a_chunked_oversized_body_is_refused_before_it_ends(live):
    head = (
        b"POST /api/labels HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    piece = b"%x\r\n%s\r\n" % (64 * 1024, b"\0" * 64 * 1024)
    chunks = [b"%x\r\n%s\r\n" % (len(part), part)] + [piece] * (OPTIONS.max_body_bytes // (64 * 1024) + 3)
    answer = raw(live.port, head, chunks)  # over the limit, and never the final 0-chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(live.url + GOOD).status_code == 200


def test_the_body_limit_stops_reading_at_the_limit():
    pulled, sent = [], []

    async def app(scope, receive, send):  # reads the whole body, as a form parser would
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def send(message):
        sent.append(message)

    asyncio.run(BodyLimit(app, 10_000)({"type": "http", "headers": []}, receive, send))
    assert len(pulled) == 11 and sent[0]["status"] == 413 and b"limit" in sent[1]["body"]


def test_concurrent_clients_on_loopback_see_no_errors(served, live):
    index, images, _ = served
    clients, per_client = 16, 8
    upload = png_bytes(images[3])
    expected = {q: [h.id for h in index.text_to_images(q, 5)] for q in ("a red circle", "a blue square")}
    latencies, failures = [], []

    def client(n: int) -> None:
        with httpx.Client(base_url=live.url, timeout=60) as http:
            for i in range(per_client):
                started = time.perf_counter()
                if i % 4 == 3:
                    answer = http.post("/api/search/image", files={"file": ("q.png", upload)}, data={"k": "5"})
                elif i % 4 == 2:
                    answer = http.get(f"/api/thumb/{(n + i) % len(images)}")
                else:
                    q = list(expected)[(n + i) % 2]
                    answer = http.get("/api/search", params={"q": q, "k": 5})
                    if answer.status_code == 200 and [r["id"] for r in answer.json()["results"]] != expected[q]:
                        failures.append(f"{q}: other results")
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code}: {answer.text[:100]}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(f"\n{clients} clients x {per_client} requests: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    assert not failures and len(latencies) == clients * per_client


@pytest.mark.parametrize(
    "host, warned",
    [
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.20", True),
        ("example.org", True),
    ],  # fmt: skip
)
def test_only_loopback_hosts_go_without_a_warning(host, warned):
    assert (exposure_warning(host) is not None) == warned


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vislang.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # fmt: skip


def test_the_command_serves_on_loopback_and_refuses_bad_starts(served):
    index = served[0]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    taken = cli(str(index.root), "--port", str(port))  # the port is held by the probe
    error = taken.stderr.read()
    assert taken.wait(120) == 2 and error.count("\n") == 1 and "cannot listen on 127.0.0.1" in error
    probe.close()
    server = cli(str(index.root), "--port", str(port))
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=5).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert info["count"] == len(index)
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    finally:
        server.terminate()
        server.wait(30)
