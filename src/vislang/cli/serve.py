"""``vislang serve``: the search page and its JSON API over an index (``vislang index``)."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

from vislang.cli.common import positive_int
from vislang.errors import ConfigError

EPILOG = """examples:
  vislang serve runs/index                          http://127.0.0.1:8000/ (this machine only)
  vislang serve runs/index --port 8080 --max-upload-mb 4
  vislang serve runs/index --host 0.0.0.0           every interface: anyone who reaches it can search

The JSON API (GET /api/search?q=..., POST /api/search/image, POST /api/labels, GET /api/thumb/ID,
GET /api/info) is described in docs/search.md (its OpenAPI schema: GET /api/openapi.json)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve an embedding index as a search page",
        description="A web page for text and image search and zero-shot labelling over an index, with "
        "the JSON API behind it. Listens on loopback unless --host says otherwise.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("index", metavar="INDEX", help="an index directory written by vislang index")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    p.add_argument("--max-upload-mb", type=positive_float, default=10.0, help="largest upload in MiB (default 10)")
    p.add_argument("--max-pixels", type=positive_int, default=25_000_000,
                   help="largest uploaded image in pixels, checked before decoding (default 25000000)")  # fmt: skip
    p.add_argument("--model", help="the model, where it is no longer at the path the index recorded")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    warning = exposure_warning(args.host)
    if warning:
        print(f"vislang: warning: {warning}", file=sys.stderr)
    check_free(args.host, args.port)  # before the slow imports: a taken port is said at once
    try:
        import uvicorn

        from vislang.serve.app import create_app, warm_up
        from vislang.serve.limits import MIB, ServeOptions
    except ImportError as error:
        raise ConfigError(f"vislang serve needs the search extra (pip install 'vislang[search]'): {error}") from None
    from vislang.search.searcher import SearchIndex

    index = SearchIndex(args.index, model_path=args.model)
    warm_up(index)  # loads the model: a bad one is one line before the server starts
    options = ServeOptions(max_upload_bytes=int(args.max_upload_mb * MIB), max_pixels=args.max_pixels,
                           model=args.model or str(index.manifest.get("model")))  # fmt: skip
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {len(index)} images from {args.index} at http://{shown}:{args.port}/", file=sys.stderr)
    uvicorn.run(create_app(index, options), host=args.host, port=args.port, log_level="warning")
    return 0


def exposure_warning(host: str) -> str | None:
    """A one-line warning when ``host`` is not a loopback address (None when it is)."""
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (f"--host {host} is not loopback: anyone who can reach this machine can search the index and "
            "upload images (there is no authentication)")  # fmt: skip


def check_free(host: str, port: int) -> None:
    """Fail with one line, before the index and model are loaded, when the address is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConfigError(f"--host {host}: {error.strerror or error}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def port_number(text: str) -> int:
    """argparse type for a TCP port (1..65535)."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 1 and 65535, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type for a size that must be above zero (MiB)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value
