"""`instarun serve RUN_DIR`: the viewer and dynamic tiles over HTTP (starlette + rio-tiler).

The HTTP layer is thin: routes call library functions and one table maps their errors to
status codes. Files are served only from inside the run folder (no '..', no absolute paths,
no symlinks leading out) and only what the map shows (the report, viewer pages and tiles,
prediction COGs and indexes: never logs, checkpoints or locks); requests must name a loopback
host (a DNS-rebinding page cannot read the run), tile zooms are capped, and report.json is
read again when a rerun rewrites it.
"""

from __future__ import annotations

import json
from pathlib import Path

from instageo.errors import InputError

MAX_ZOOM = 22
MAX_URL = 1024  # bytes of path and query; nothing this app serves needs more
LAYERS = ("prediction", "confidence", "rgb")
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
SERVED = ("report.json", "report.md", "sweep.png", "viewer/")  # top-level files and folders
SERVED_STAGES = ("viewer-", "predict-", "teacher_predict-")  # stage folders the map reads from
NEVER = (".pt", ".log", ".lock.json")


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


class Unreadable(Exception):
    """A run file the server should read and cannot (damaged)."""


def servable(relative: str) -> bool:
    """Whether the map needs this run file: the report, viewers, predictions."""
    if relative.endswith(NEVER):
        return False
    parts = relative.split("/")
    if len(parts) >= 2 and parts[0] == "stages":
        return parts[1].startswith(SERVED_STAGES)
    return relative in SERVED or relative.startswith(SERVED[-1])


def safe_path(root: Path, relative: str) -> Path:
    """``relative`` inside ``root`` (after resolving symlinks), else NotFound."""
    if relative.startswith("/") or "\x00" in relative:
        raise NotFound(relative)
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise NotFound(relative)
    if not candidate.is_file():
        raise NotFound(relative)
    return candidate


def create_app(run_dir: Path):
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route

    from instageo.deploy.viewer import render_tile

    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    root = Path(run_dir).resolve()
    cached = {"mtime": None, "report": {}}

    def current_report() -> dict:
        """report.json as it is now (a rerun rewrites it while the server runs)."""
        path = root / "report.json"
        try:
            mtime = path.stat().st_mtime_ns
            if mtime != cached["mtime"]:
                report = json.loads(path.read_bytes())
                if not isinstance(report, dict):
                    raise ValueError("not a JSON object")
                cached["report"], cached["mtime"] = report, mtime
        except (OSError, ValueError) as exc:
            raise Unreadable(f"{path}: not a readable report ({exc})") from None
        return cached["report"]

    try:
        current_report()  # a run folder without a readable report fails at start
    except Unreadable as exc:
        raise InputError(f"{exc}; rerun the recipe to write it again") from None

    def home(request):
        report = current_report()
        if not report.get("viewer"):
            raise NotFound("this run has no viewer")
        return RedirectResponse(f"/files/{report['viewer']}")

    def files(request):
        relative = request.path_params["path"]
        if not servable(relative):
            raise NotFound(relative)
        return FileResponse(safe_path(root, relative))

    def tile(request):
        report = current_report()
        layer = request.path_params["layer"]
        z, x, y = (request.path_params[k] for k in ("z", "x", "y"))
        if layer not in LAYERS or not report.get(layer):
            raise BadRequest(f"layer '{layer}' is not valid, should be one of "
                             f"{[name for name in LAYERS if report.get(name)]}")
        if not 0 <= z <= MAX_ZOOM:
            raise BadRequest(f"zoom {z} is outside 0..{MAX_ZOOM}")
        try:
            with Reader(str(safe_path(root, report[layer]))) as reader:
                return Response(render_tile(reader, layer, x, y, z), media_type="image/png")
        except TileOutsideBounds:
            raise
        except (RasterioError, CPLE_BaseError) as exc:  # a damaged COG: one line, no traceback
            raise Unreadable(f"{report[layer]}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def errors(status: int):
        async def handle(request, exc):
            return PlainTextResponse(f"{status}: {exc}", status_code=status)
        return handle

    return Starlette(
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS), Middleware(RequestLimits)],
        routes=[Route("/", home), Route("/files/{path:path}", files),
                Route("/tiles/{layer}/{z:int}/{x:int}/{y:int}.png", tile)],
        exception_handlers={NotFound: errors(404), TileOutsideBounds: errors(404),
                            BadRequest: errors(400), Unreadable: errors(500)},
    )


def guarded_protocol(head_seconds: float):
    """uvicorn's HTTP protocol with a deadline for each request head: a connection that has
    not sent a whole request line and headers ``head_seconds`` after it opened (or after its
    last answer) is closed. uvicorn has idle keep-alive timeouts but none for a slow head,
    so 300 connections sending a byte at a time stayed open."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Guarded(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            waiting_for = self.cycle  # a new request replaces the cycle
            self._head_timer = self.loop.call_later(
                head_seconds, lambda: self.cycle is waiting_for and self.transport.close())

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._head_timer.cancel()
            self._arm()

        def connection_lost(self, exc) -> None:
            self._head_timer.cancel()
            super().connection_lost(exc)

    return Guarded


class RequestLimits:
    """ASGI middleware: only bodiless GET/HEAD requests with a URL under MAX_URL bytes get in."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            length = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            refusal = ((405, "only GET and HEAD") if scope["method"] not in ("GET", "HEAD")
                       else (413, "requests carry no body") if headers.get(b"content-length", b"0") != b"0"
                       or b"transfer-encoding" in headers
                       else (414, f"URL longer than {MAX_URL} bytes") if length > MAX_URL else None)
            if refusal:
                from starlette.responses import PlainTextResponse

                await PlainTextResponse(f"{refusal[0]}: {refusal[1]}", status_code=refusal[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)
