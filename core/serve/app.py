"""The HTTP face: FastAPI routes, JSON errors, and the two pages (upload, API docs) under a strict CSP.

Every error a client can cause is a 4xx with {"error": ...}; FastAPI's own
validation and routing errors are reshaped to the same form. The pages carry
their script and style inline and the Content-Security-Policy allows exactly
those (by hash), this server (connect-src 'self') and blob: images (previews):
the pages make no request elsewhere. The docs page is tlzoo's own small
renderer of /openapi.json; FastAPI's Swagger UI and ReDoc load from a CDN and
are switched off.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from tlzoo.serve.batcher import Batcher
from tlzoo.serve.metrics import Metrics
from tlzoo.serve.served import Served, prepare_upload, serving_versions
from tlzoo.serve.uploads import FIELD, BadInput, read_body, uploads_of
from tlzoo.version import __version__

ROUTES = ("/", "/docs", "/openapi.json", "/predict", "/health", "/info", "/metrics")


@dataclass
class Settings:
    top_k: int = 5
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_upload_mb: float = 20.0
    max_files: int = 64
    read_timeout: float = 30.0


class Ranked(BaseModel):
    class_: str = Field(alias="class")
    probability: float


class ImageAnswer(BaseModel):
    name: str = Field(description="the upload's file name ('body' for a raw image body)")
    top: list[Ranked] = Field(description="the most probable classes, best first")
    unknown: bool = Field(description="true when the image is unlike what the model was trained on, as "
                                      "`tlzoo predict` decides it (false where it decides nothing)")
    ood_score: float | None = Field(None, description="the out-of-distribution score `unknown` was decided by; "
                                                      "null where the model has none")


class PredictAnswer(BaseModel):
    predictions: list[ImageAnswer] = Field(description="one per image, in upload order")


class ErrorAnswer(BaseModel):
    error: str


ERRORS = {status: {"model": ErrorAnswer, "description": what} for status, what in (
    (400, "an empty or malformed body, or a form part other than a file in the field 'file'"),
    (408, "the body did not arrive within the read timeout"),
    (413, "the body is over --max-upload-mb, or holds more than --max-files images"),
    (415, "neither multipart/form-data nor image/*"),
    (422, "an upload is not a usable image (not an image, truncated, a decompression bomb, too thin), or a "
          "query parameter is out of range"),
    (503, "the model failed its warm-up batch"))}

UPLOAD_BODY = {"required": True, "description": f"images as files in the multipart field '{FIELD}', or one "
                                                "image as the whole body",
               "content": {"multipart/form-data": {"schema": {"type": "object", "required": [FIELD], "properties": {
                   FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
                   "image/*": {"schema": {"type": "string", "format": "binary"}}}}


def answer_of(name: str, prediction) -> dict:
    """One image's entry in the answer: what the predict path's Prediction says, `unknown` and `ood_score`
    included once it decides them (issue 22; until then false and null)."""
    return {"name": name, "top": [{"class": c, "probability": p} for c, p in prediction.top],
            "unknown": bool(getattr(prediction, "unknown", False)), "ood_score": getattr(prediction, "ood_score", None)}


def page(name: str, **values) -> tuple[str, str]:
    """(html, Content-Security-Policy) of one of the pages, its inline script and style allowed by hash."""
    html = resources.files("tlzoo.serve").joinpath(name).read_text(encoding="utf-8")
    for key, value in values.items():
        html = html.replace("{{ " + key + " }}", str(value))

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
                        for s in found)

    policy = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; img-src blob: data:; "
              "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html, policy


def build_app(served: Served, batcher: Batcher, metrics: Metrics, settings: Settings, lifespan=None) -> FastAPI:
    app = FastAPI(title="tlzoo serve", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Predictions of a model trained with tlzoo. There is no authentication: "
                              "keep the server on 127.0.0.1 or put an authenticating proxy in front.")
    decoding = Decoding(served)
    app.add_middleware(Recorder, metrics=metrics)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception):  # a bug or a model that fails: logged, answered in JSON
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{' '.join(str(part) for part in error['loc'])}: {error['msg']}"
                             for error in exc.errors())
        return JSONResponse({"error": problems}, status_code=422)

    @app.post("/predict", response_model=PredictAnswer, responses=ERRORS, openapi_extra={"requestBody": UPLOAD_BODY},
              summary="Top classes of each uploaded image")
    async def predict(request: Request, top_k: int = Query(settings.top_k, ge=1, le=1000,
                                                           description="classes per image")):
        if batcher.failed:
            return JSONResponse({"error": f"the model failed its warm-up batch: {batcher.failed}"}, status_code=503)
        with batcher.arrival():
            body = await read_body(request, settings.max_upload_mb, settings.read_timeout)
            uploads = uploads_of(body, request.headers.get("content-type", ""), settings.max_files)
            del body
            rows = [await decoding.prepare(upload) for upload in uploads]
            items = batcher.submit(rows, top_k)  # queued before it stops counting as arriving
        predictions = await batcher.results(items)
        return {"predictions": [answer_of(upload.name, p) for upload, p in zip(uploads, predictions)]}

    @app.get("/health", summary="200 once the model is loaded and has answered its warm-up batch",
             responses={503: {"description": "warming up, or the warm-up failed"}})
    async def health():
        if batcher.failed:
            return JSONResponse({"status": "failed", "error": batcher.failed}, status_code=503)
        if not batcher.ready.is_set():
            return JSONResponse({"status": "warming up"}, status_code=503)
        return {"status": "ok"}

    @app.get("/info", summary="The model: classes, backbone, input size, preprocessing, versions")
    async def info():
        return {**served.info, "server": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                                          "top_k": settings.top_k, "max_upload_mb": settings.max_upload_mb,
                                          "max_files": settings.max_files, "read_timeout_s": settings.read_timeout},
                "versions": serving_versions()}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    async def prometheus():
        return PlainTextResponse(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    upload_page = page("page.html", top_k=settings.top_k, max_files=settings.max_files)
    docs_page = page("docs.html")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(upload_page[0], headers=security_headers(upload_page[1]))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs():
        return HTMLResponse(docs_page[0], headers=security_headers(docs_page[1]))

    return app


class Decoding:
    """Uploads decoded and prepared in threads, as many at once as there are cores (each may hold a decoded
    image of up to 64 Mpx, tlzoo.data.images.MAX_PIXELS), off the event loop."""

    def __init__(self, served: Served):
        self.served = served
        self.limiter = None  # made on first use: anyio makes it for the running event loop

    async def prepare(self, upload):
        import anyio
        import anyio.to_thread

        from tlzoo.runtime.device import available_cpus

        if self.limiter is None:
            self.limiter = anyio.CapacityLimiter(max(1, available_cpus()))
        return await anyio.to_thread.run_sync(prepare_upload, self.served, upload, limiter=self.limiter)


class Recorder:
    """ASGI middleware: each answer's route, status and time into the metrics."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"  # label values stay few
            self.metrics.request(route, status[0], time.perf_counter() - started)


def security_headers(policy: str) -> dict:
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
