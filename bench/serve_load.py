"""Latency and throughput of ``vislang serve`` under N concurrent clients on loopback.

    python bench/serve_load.py [--index DIR] [--model runs/demo] [--images 200]
        [--clients 16] [--requests 50] [--k 10]

The server is the real command (``vislang serve INDEX --port P``) in its own process; the
clients are threads in this one, each with its own HTTP connection, sending a fixed mix of
requests one after another: text searches (world phrases), thumbnails (random ids), image
searches and zero-shot labels (uploads of world images that are not in the index). Without
``--index`` an index of ``--images`` world test images with their captions is written first,
with ``--model``'s embeddings (tests/index_helpers.py, the index layout without ``vislang
index``). Reported: p50 / p99 latency per kind and overall, requests/s over the whole run, and
every non-200 answer (there should be none).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _machine import cpu_line

ROOT = Path(__file__).resolve().parent.parent
MIX = ("text", "text", "text", "text", "thumb", "thumb", "thumb", "image", "image", "labels")  # 40/30/20/10 %
PHRASES = ("a red circle", "a blue square", "a small green triangle", "a large yellow star", "a purple cross",
           "an orange diamond", "a white circle to the left of a cyan square", "a red star above a blue circle")  # fmt: skip


def build_index(root: Path, model: str, n: int) -> list[bytes]:
    """A world index of ``n`` test images; returns PNG uploads of 8 more test images."""
    sys.path.insert(0, str(ROOT / "tests"))
    from PIL import Image

    from index_helpers import build_test_index
    from vislang.data.world import World

    world = World(96)
    samples = [world.sample("test", i) for i in range(n + 8)]
    images = [Image.fromarray(image) for image, _, _ in samples]
    build_test_index(root, Path(model), images[:n], [caption for _, caption, _ in samples[:n]], part_size=64)
    uploads = []
    for image in images[n:]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        uploads.append(buffer.getvalue())
    return uploads


def start_server(index: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "vislang.cli", "serve", str(index), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300
    while True:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"vislang serve did not start: {server.stderr.read() if server.stderr else ''}")
        try:
            httpx.get(url + "/api/info", timeout=5).raise_for_status()
            return server, url
        except httpx.TransportError:
            time.sleep(0.2)


def request(http, kind: str, rng: random.Random, count: int, uploads: list[bytes], k: int):
    if kind == "text":
        return http.get("/api/search", params={"q": rng.choice(PHRASES), "k": k})
    if kind == "thumb":
        return http.get(f"/api/thumb/{rng.randrange(count)}")
    files = {"file": ("query.png", rng.choice(uploads), "image/png")}
    if kind == "image":
        return http.post("/api/search/image", files=files, data={"k": str(k)})
    return http.post("/api/labels", files=files, data={"classes": "circle, square, triangle, diamond, cross, star"})


def load(url: str, clients: int, per_client: int, count: int, uploads: list[bytes], k: int) -> dict:
    import httpx

    times: dict[str, list[float]] = {kind: [] for kind in set(MIX)}
    errors: list[str] = []
    start_line = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=url, timeout=120) as http:
            request(http, "text", rng, count, uploads, k)  # connect and warm up outside the timed span
            start_line.wait()
            for i in range(per_client):
                kind = MIX[(n + i) % len(MIX)]
                began = time.perf_counter()
                answer = request(http, kind, rng, count, uploads, k)
                times[kind].append(time.perf_counter() - began)
                if answer.status_code != 200:
                    errors.append(f"{kind}: {answer.status_code} {answer.text[:120]}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    every = [t for kind_times in times.values() for t in kind_times]
    rows = {kind: _percentiles(ts) for kind, ts in sorted(times.items())} | {"all": _percentiles(every)}
    return {"clients": clients, "requests": len(every), "wall_s": round(wall, 3),
            "requests_per_s": round(len(every) / wall, 1), "latency_ms": rows, "errors": errors}  # fmt: skip


def _percentiles(seconds: list[float]) -> dict[str, float]:
    p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99]) if seconds else (float("nan"),) * 2
    return {"n": len(seconds), "p50": round(float(p50), 1), "p99": round(float(p99), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", help="an existing index (default: write a world index first)")
    parser.add_argument("--model", default=str(ROOT.parent / "runs" / "demo"), help="for the written index")
    parser.add_argument("--images", type=int, default=200, help="world images in the written index")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object as well")
    args = parser.parse_args()
    print(f"cpu: {cpu_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(args.index) if args.index else Path(tmp) / "index"
        uploads = [] if args.index else build_index(index, args.model, args.images)
        if not uploads:
            from PIL import Image

            buffer = io.BytesIO()
            Image.new("RGB", (96, 96), (200, 40, 40)).save(buffer, format="PNG")
            uploads = [buffer.getvalue()]
        server, url = start_server(index)
        try:
            import httpx

            count = httpx.get(url + "/api/info").json()["count"]
            result = load(url, args.clients, args.requests, count, uploads, args.k)
        finally:
            server.terminate()
            server.wait(30)
    print(f"index: {count} images; {args.clients} clients x {args.requests} requests on loopback, k={args.k}")
    for kind, row in result["latency_ms"].items():
        print(f"  {kind:<7} n={row['n']:<5} p50 {row['p50']:>7.1f} ms   p99 {row['p99']:>7.1f} ms")
    print(f"  {result['requests_per_s']} requests/s over {result['wall_s']} s; errors: {len(result['errors'])}")
    for error in result["errors"][:10]:
        print(f"  error: {error}")
    if args.json:
        print(json.dumps({"cpu": cpu_line(), "count": count, **result}))


if __name__ == "__main__":
    main()
