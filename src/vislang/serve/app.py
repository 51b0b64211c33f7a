"""The search web application: one page and the JSON API behind it, over one :class:`SearchIndex`.

Every answer the API gives is what ``SearchIndex`` gives for the same query, so the command
line, the page and a script calling the API agree. What a request can make the server do is
bounded (``ServeOptions``): the body is refused past its size while it is being read, an image
past its pixel count from its header, ``k`` and the class names by count. Thumbnails are looked
up by integer id among the index's rows, so no part of a request ever names a file. Every refusal
is a 4xx with ``{"error": "one line"}``, and nothing a request sends stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from vislang.errors import DataError
from vislang.search.searcher import Hit, SearchIndex, image_from_bytes
from vislang.serve.limits import MIB, BodyLimit, ServeOptions
from vislang.serve.page import PAGE

MAX_ID = 2**62  # ids are int64 row positions; a larger number cannot name a row
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' blob: data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
THUMB_HEADERS = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"}
log = logging.getLogger(__name__)


class TextQuery(BaseModel):
    """The JSON body of ``POST /api/search``."""

    model_config = ConfigDict(extra="forbid")
    q: str
    k: int = 10


def create_app(index: SearchIndex, options: ServeOptions | None = None) -> FastAPI:
    """The application over ``index`` (in-process with a test client, or under uvicorn)."""
    options = options or ServeOptions()
    # no Swagger page: it loads its script from a CDN, and the server needs no network
    app = FastAPI(title="vislang search", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes)
    _add_error_handlers(app)
    api = _Api(index, options)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers=PAGE_HEADERS)

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return api.info()

    @app.get("/api/search")
    async def search_get(q: str, k: int = 10) -> dict[str, Any]:
        return await api.text_search(q, k)

    @app.post("/api/search")
    async def search_post(query: TextQuery) -> dict[str, Any]:
        return await api.text_search(query.q, query.k)

    @app.post("/api/search/image")
    async def search_image(
        file: Annotated[UploadFile, File()],
        k: Annotated[int, Form()] = 10,
        to: Annotated[Literal["image", "text"], Form()] = "image",
    ) -> dict[str, Any]:
        return await api.image_search(await api.read_image(file), k, to)

    @app.post("/api/labels")
    async def labels(file: Annotated[UploadFile, File()], classes: Annotated[str, Form()]) -> dict[str, Any]:
        return await api.labels(await api.read_image(file), classes)

    @app.get("/api/thumb/{id}", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def thumb(id: Annotated[int, PathParam(ge=0, le=MAX_ID)]) -> Response:
        return Response(await api.thumbnail(id), media_type="image/jpeg", headers=THUMB_HEADERS)

    return app


def warm_up(index: SearchIndex) -> None:
    """Load the model and run each kind of query once, so that the first users' requests do not
    pay for what a first call costs (and hold up every request queued behind them)."""
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    index.text_to_images("a photo", 1)
    index.image_to_images(image, 1)
    index.labels(image, ["a", "b"])


class _Api:
    """The endpoints' work, checked against the options. Requests run concurrently, but the
    model runs one query at a time on one worker thread, in arrival order (a lock would let some
    requests overtake others for as long as the load lasts; tokenizers are not all thread-safe),
    and the thumbnail cache is changed under a lock."""

    def __init__(self, index: SearchIndex, options: ServeOptions) -> None:
        self.index, self.options = index, options
        self.model_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vislang-model")
        self.thumb_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        o = self.options
        return {"count": len(self.index), "has_captions": self.index.has_captions,
                "model": o.model or str(self.index.manifest.get("model")), "max_k": o.max_k,
                "max_upload_bytes": o.max_upload_bytes, "max_pixels": o.max_pixels,
                "max_classes": o.max_classes}  # fmt: skip

    def check_k(self, k: int) -> int:
        if not 1 <= k <= self.options.max_k:
            raise HTTPException(422, f"k must be between 1 and {self.options.max_k}, got {k}")
        return k

    def check_text(self, text: str, what: str) -> str:
        text = text.strip()
        if not text:
            raise HTTPException(422, f"{what} is empty")
        if len(text) > self.options.max_text_chars:
            raise HTTPException(422, f"{what} is over {self.options.max_text_chars} characters")
        return text

    async def _on_model(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.model_worker, fn, *args)

    async def text_search(self, q: str, k: int) -> dict[str, Any]:
        q, k = self.check_text(q, "the query"), self.check_k(k)
        return _results(await self._on_model(self.index.text_to_images, q, k))

    async def image_search(self, image: Image.Image, k: int, to: str) -> dict[str, Any]:
        k = self.check_k(k)
        if to == "text" and not self.index.has_captions:
            raise HTTPException(400, "no captions were indexed, so there is no text to search")
        search = self.index.image_to_texts if to == "text" else self.index.image_to_images
        return _results(await self._on_model(search, image, k))

    async def labels(self, image: Image.Image, classes: str) -> dict[str, Any]:
        names = list(dict.fromkeys(n.strip() for n in re.split(r"[,\n]", classes) if n.strip()))
        if not names:
            raise HTTPException(422, "give at least one class name (separated by commas or new lines)")
        if len(names) > self.options.max_classes:
            raise HTTPException(422, f"{len(names)} class names, over the limit of {self.options.max_classes}")
        names = [self.check_text(n, "a class name") for n in names]
        pairs = await self._on_model(self.index.labels, image, names)
        return {"labels": [{"name": name, "prob": round(prob, 6)} for name, prob in pairs]}

    async def read_image(self, file: UploadFile) -> Image.Image:
        """The uploaded file as an RGB image (its bytes already bounded by the body limit)."""
        data = await file.read()
        if len(data) > self.options.max_upload_bytes:
            raise HTTPException(413, f"the image is over the {self.options.max_upload_bytes / MIB:.1f} MiB limit")
        if not data:
            raise HTTPException(400, "the uploaded file is empty")
        return await run_in_threadpool(_decode, data, self.options.max_pixels)

    def _thumbnail(self, id_: int) -> bytes | None:
        with self.thumb_lock:
            return self.index.thumbnail(id_)

    async def thumbnail(self, id_: int) -> bytes:
        data = await run_in_threadpool(self._thumbnail, id_)
        if data is None:
            missing = self.index.row(id_) is None
            raise HTTPException(404, f"no image with id {id_}" if missing else f"image {id_} has no thumbnail")
        return data


def _decode(data: bytes, max_pixels: int) -> Image.Image:
    """Decode an upload with image_from_bytes' checks (formats PIL decodes itself only, size
    before decoding, truncation, bombs)."""
    return image_from_bytes(data, max_pixels)


def _results(hits: list[Hit]) -> dict[str, Any]:
    return {"results": [{"rank": rank, **hit.as_dict(), "thumb": f"/api/thumb/{hit.id}"}
                        for rank, hit in enumerate(hits, 1)]}  # fmt: skip


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal as ``{"error": "one line"}``: HTTP errors, validation, bad data, bugs."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return _error(400, "the request body is not valid JSON")
        return _error(422, "; ".join(_problem(p) for p in problems[:3]))

    @app.exception_handler(DataError)
    async def bad_data(request: Request, error: DataError) -> JSONResponse:
        return _error(400, str(error).splitlines()[0] if str(error) else "bad input")

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return _error(500, f"internal error ({type(error).__name__}); the server log has the details")


def _problem(problem: dict[str, Any]) -> str:
    """One validation problem as ``where: what`` (``k: Input should be a valid integer``)."""
    where = ".".join(str(p) for p in problem.get("loc", ())[1:]) or "request"
    return f"{where}: {problem.get('msg', 'invalid')}"
