"""The HTTP API and the page of ``rloss annotate`` (Starlette; served by uvicorn).

``GET /`` the page; ``/static/*`` its script and style (package data, nothing from the network);
``GET /api/session`` classes and images with their progress; ``GET /api/images/<id>`` size and the
saved scribbles (run-length, see :mod:`.strokes`); ``GET /api/images/<id>/display.png`` the image
as 8-bit PNG; ``POST /api/images/<id>/mask`` the dense mask of the strokes sent (VOC-palette PNG);
``POST /api/images/<id>/save`` writes scribbles and mask. Errors are ``{"error": message}`` with
status 400 (bad strokes or body), 404 (no such image), 413 (body over the limit), 415 (not JSON)
or 422 (the image file cannot be read); nothing is written then.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rloss.data.constants import voc_palette
from rloss.tools.annotate.engine import Engine
from rloss.tools.annotate.store import Store, UnknownImage, display_png
from rloss.tools.annotate.strokes import StrokeError, encode_base, rasterize

STATIC = Path(__file__).resolve().parent / "static"
BODY_LIMIT = 8 * 2**20
"""Largest request body accepted (bytes)."""
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]
PALETTE = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)


class RequestError(Exception):
    """A request the API refuses: ``status`` and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def api(handler: Callable[..., Awaitable[Response]]) -> Handler:
    """Turn the refusals of ``handler`` (unknown id, bad body or strokes, unreadable image) into
    JSON errors."""

    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except UnknownImage as error:
            return error_response(404, f"no image with id {error.args[0]!r} in --images")
        except RequestError as error:
            return error_response(error.status, str(error))
        except StrokeError as error:
            return error_response(400, f"nothing written: {error}")
        except ValueError as error:  # read_image / read_label: the file cannot be decoded or does not fit
            return error_response(422, f"nothing written: {error}")

    return wrapped


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body of ``request``; RequestError for another content type (415), a body over
    ``limit`` bytes (413, before reading it all) or invalid JSON (400)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise RequestError(415, "expected a JSON body (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared)} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(400, f"the body is not valid JSON ({error})") from error


def mask_png(mask: np.ndarray) -> str:
    """data: URL of uint8 (H,W) class ids as a VOC-palette PNG."""
    image = Image.fromarray(mask)  # 2-D uint8: "L"
    image.putpalette(voc_palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def create_app(store: Store, engine: Engine, body_limit: int = BODY_LIMIT, hosts: list[str] | None = None) -> Starlette:
    """The Starlette app over ``store`` and ``engine``; ``hosts``: the Host header values accepted
    (default: loopback names only, which keeps other web sites out through DNS rebinding)."""
    cache: OrderedDict[str, np.ndarray] = OrderedDict()
    cache_lock = threading.Lock()

    def image(image_id: str) -> np.ndarray:
        """float32 (C,H,W) of ``image_id``: the last 4 read are kept."""
        store.path(image_id)
        with cache_lock:
            if image_id not in cache:
                cache[image_id] = store.read(image_id)
                while len(cache) > 4:
                    cache.popitem(last=False)
            cache.move_to_end(image_id)
            return cache[image_id]

    def progress() -> dict[str, Any]:
        done = [store.done(i) for i in store.images]
        images = [{"id": i, "done": d} for i, d in zip(store.images, done, strict=True)]
        return {"done": sum(done), "total": len(done), "images": images}

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @api
    async def session(request: Request) -> Response:
        colors = ["#" + bytes(PALETTE[i]).hex() for i in range(len(store.classes))]
        classes = [{"id": i, "name": n, "color": c} for i, (n, c) in enumerate(zip(store.classes, colors, strict=True))]
        return JSONResponse({"classes": classes, "checkpoint": engine.predictor is not None, **progress()})

    @api
    async def info(request: Request) -> Response:
        image_id = request.path_params["image_id"]
        pixels = await run_in_threadpool(image, image_id)
        size = pixels.shape[1:]
        saved = await run_in_threadpool(store.saved_scribbles, image_id, size)
        return JSONResponse({
            "id": image_id, "height": size[0], "width": size[1], "channels": pixels.shape[0],
            "done": saved is not None, "base": None if saved is None else encode_base(saved),
        })

    @api
    async def display(request: Request) -> Response:
        pixels = await run_in_threadpool(image, request.path_params["image_id"])
        return Response(await run_in_threadpool(display_png, pixels), media_type="image/png")

    async def strokes_and_mask(request: Request) -> tuple[str, np.ndarray, np.ndarray, np.ndarray | None, float]:
        image_id = request.path_params["image_id"]
        store.path(image_id)
        body = await read_json(request, body_limit)
        pixels = await run_in_threadpool(image, image_id)
        scribbles = rasterize(body, tuple(pixels.shape[1:]), len(store.classes))
        start = time.perf_counter()
        mask = await run_in_threadpool(engine.dense_mask, image_id, pixels, scribbles)
        return image_id, pixels, scribbles, mask, time.perf_counter() - start

    @api
    async def dense_mask(request: Request) -> Response:
        _, _, scribbles, mask, seconds = await strokes_and_mask(request)
        labeled = int((scribbles != 255).sum())
        return JSONResponse({"mask": None if mask is None else mask_png(mask), "seconds": seconds, "labeled": labeled})

    @api
    async def save(request: Request) -> Response:
        image_id, _, scribbles, mask, _ = await strokes_and_mask(request)
        if mask is None or not (scribbles != 255).any():
            raise RequestError(400, "nothing written: no stroke; draw at least one before saving")
        await run_in_threadpool(store.save, image_id, scribbles, mask)
        files = [str(store.scribble_path(image_id)), str(store.mask_path(image_id))]
        return JSONResponse({"saved": files, **progress()})

    routes = [
        Route("/", page),
        Route("/api/session", session),
        Route("/api/images/{image_id}", info),
        Route("/api/images/{image_id}/display.png", display),
        Route("/api/images/{image_id}/mask", dense_mask, methods=["POST"]),
        Route("/api/images/{image_id}/save", save, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts or LOOPBACK_HOSTS)]
    async def not_found(request: Request, error: Exception) -> Response:
        return error_response(404, f"no such page or file: {request.url.path}")

    async def not_allowed(request: Request, error: Exception) -> Response:
        return error_response(405, f"{request.method} is not allowed on {request.url.path}")

    return Starlette(routes=routes, middleware=middleware, exception_handlers={404: not_found, 405: not_allowed})
