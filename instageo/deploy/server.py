"""`instarun serve RUN_DIR`: the map app of a run over HTTP (starlette + rio-tiler).

The app (instageo/deploy/app/) lists the run's models and predictions and its observations
by split; a user draws an area, picks a model and a date and runs a prediction job
(instageo.deploy.jobs), watches it, then inspects and compares the maps.

The HTTP layer is thin: routes call library functions and one table maps their errors to
status codes. Files are served only from inside the run folder (no '..', no absolute paths,
no symlinks leading out) and only what the map shows (the report, viewer pages and tiles,
prediction COGs and indexes: never logs, checkpoints or locks); requests must name a loopback
host (a DNS-rebinding page cannot read the run) unless a token guards the server, tile zooms
are capped, the only requests with a body are small JSON job requests, and report.json is
read again when a rerun rewrites it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from instageo.deploy.edge import BadInput, JobRequest, PointQuery, error_body, parse_body, parse_query
from instageo.deploy.guards import LOOPBACK_HOSTS, RequestLimits, TokenGuard
from instageo.deploy.run_files import (
    LAYERS, NotFound, Unreadable, colours_of, inputs_of, models_of, observations_of, point_values, predictions_of,
    run_catalogue, safe_path, served_file,
)
from instageo.errors import InputError

log = logging.getLogger("instageo.serve")

MAX_ZOOM = 22
APP_FILES = Path(__file__).parent / "app"


def error_statuses() -> dict[type, int | None]:
    """The one table from the errors routes raise to HTTP statuses (None: the error's own
    ``status``, as BadInput and starlette's HTTPException carry one); anything else is a bug."""
    from rio_tiler.errors import TileOutsideBounds
    from starlette.exceptions import HTTPException

    return {NotFound: 404, TileOutsideBounds: 404, HTTPException: None, BadInput: None, Unreadable: 500,
            InputError: 400}


class ServedRun:
    """One run folder behind the app: its report (read again when a rerun rewrites it), its job
    queue, and a small function per route, each parsing its own request."""

    def __init__(self, run_dir: Path, basemap: str | None, catalogues: list[Path], max_tiles: int | None):
        from instageo.deploy.jobs import JobQueue

        self.root = Path(run_dir).resolve()
        self.basemap, self.catalogues, self.max_tiles = basemap, list(catalogues), max_tiles
        self._report, self._mtime = {}, None
        try:
            self.report()  # a run folder without a readable report fails at start
        except Unreadable as exc:
            raise InputError(f"{exc}; rerun the recipe to write it again") from None
        self.queue = JobQueue(self.root)

    def report(self) -> dict:
        """report.json as it is now."""
        path = self.root / "report.json"
        try:
            mtime = path.stat().st_mtime_ns
            if mtime != self._mtime:
                report = json.loads(path.read_bytes())
                if not isinstance(report, dict):
                    raise ValueError("not a JSON object")
                self._report, self._mtime = report, mtime
        except (OSError, ValueError) as exc:
            raise Unreadable(f"{path}: not a readable report ({exc})") from None
        return self._report

    def prediction(self, pid: str) -> dict:
        # every tile asks: read only the job it names, not every job.json of the run
        jobs = self.queue.finished(pid.removeprefix("job-")) if pid.startswith("job-") else []
        for prediction in predictions_of(self.root, self.report(), jobs):
            if prediction["id"] == pid:
                return prediction
        raise NotFound(f"no prediction '{pid}'")

    def routes(self) -> list:
        from starlette.routing import Route

        tiles = "{layer}/{z:int}/{x:int}/{y:int}.png"
        return [Route("/", self.home), Route("/app/{name}", self.app_file), Route("/leaflet/{path:path}", self.leaflet),
                Route("/files/{path:path}", self.files), Route("/api/run", self.run_info),
                Route("/api/observations", self.observations), Route("/api/point", self.point),
                Route("/api/jobs", self.submit, methods=["POST"]), Route("/api/jobs/{job}", self.job_status),
                Route("/api/jobs/{job}/cancel", self.job_cancel, methods=["POST"]),
                Route(f"/tiles/{tiles}", self.tile), Route(f"/p/{{pid}}/tiles/{tiles}", self.prediction_tile)]

    def home(self, request):
        from starlette.responses import FileResponse

        return FileResponse(APP_FILES / "index.html")

    def app_file(self, request):
        from starlette.responses import FileResponse

        name = request.path_params["name"]
        if name not in ("app.js", "app.css"):
            raise NotFound(name)
        return FileResponse(APP_FILES / name)

    def leaflet(self, request):
        import xstatic.pkg.leaflet as package
        from starlette.responses import FileResponse

        return FileResponse(safe_path(Path(package.BASE_DIR).resolve(), request.path_params["path"]))

    def files(self, request):
        from starlette.responses import FileResponse

        return FileResponse(served_file(self.root, request.path_params["path"]))

    def run_info(self, request):
        from starlette.responses import JSONResponse

        report = self.report()
        catalogues = [{"id": i, "name": path.name if path.name != "catalog.json" else str(path.parent.name)}
                      for i, path in enumerate(self.catalogues)]
        return JSONResponse({"name": self.root.name, "task": report.get("task"), "models": models_of(self.root, report),
                             "predictions": predictions_of(self.root, report, self.queue.finished()),
                             "basemap": self.basemap, "catalogues": [{"id": "recipe", "name": "the recipe's"}, *catalogues],
                             "colours": colours_of(self.root, report)})

    def observations(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse(observations_of(self.root, self.report()))

    def tile(self, request):  # the recommended prediction's layers (the static viewer's and older links)
        report, layer = self.report(), request.path_params["layer"]
        if layer not in LAYERS or not report.get(layer):
            raise BadInput(f"layer '{layer}' is not valid, should be one of "
                           f"{[name for name in LAYERS if report.get(name)]}", "layer")
        return self._tile(report[layer], layer, request.path_params)

    def prediction_tile(self, request):
        prediction, layer = self.prediction(request.path_params["pid"]), request.path_params["layer"]
        if layer not in prediction["layers"]:
            raise BadInput(f"layer '{layer}' is not valid, should be one of {sorted(prediction['layers'])}", "layer")
        return self._tile(prediction["layers"][layer], layer, request.path_params)

    def _tile(self, path: str, layer: str, where: dict):
        from rasterio._err import CPLE_BaseError
        from rasterio.errors import RasterioError
        from rio_tiler.io import Reader
        from starlette.responses import Response

        from instageo.deploy.viewer import render_tile

        z, x, y = where["z"], where["x"], where["y"]
        if not 0 <= z <= MAX_ZOOM:
            raise BadInput(f"zoom {z} is outside 0..{MAX_ZOOM}", "z")
        try:
            with Reader(str(safe_path(self.root, path))) as reader:
                return Response(render_tile(reader, layer, x, y, z), media_type="image/png")
        except (RasterioError, CPLE_BaseError) as exc:  # a damaged COG: one line, no traceback
            raise Unreadable(f"{path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def point(self, request):
        from starlette.responses import JSONResponse

        query = parse_query(request.query_params, PointQuery)
        prediction, report = self.prediction(query.prediction), self.report()
        classes = (report.get("task") or {}).get("classes", [])
        found = point_values(self.root, prediction, classes, query.lon, query.lat)
        if query.inputs and not found.get("outside"):
            found["inputs"] = inputs_of(self.root, report, prediction, query.lon, query.lat)
        return JSONResponse(found)

    async def submit(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            raise BadInput("send the job as application/json")
        job = parse_body(await request.body(), JobRequest)
        # sizing reads the catalogue (a file, or the server's STAC API): off the event loop
        submitted = await run_in_threadpool(submit_job, self.root, self.queue, self.report(), job, self.catalogues,
                                            self.max_tiles)
        return JSONResponse(submitted.public(), status_code=202)

    def job_status(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse(self._job(request).public())

    def job_cancel(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse(self.queue.cancel(self._job(request).id).public())

    def _job(self, request):
        job = self.queue.jobs.get(request.path_params["job"])
        if job is None:
            raise NotFound(f"no job '{request.path_params['job']}'")
        return job


def create_app(run_dir: Path, token: str | None = None, basemap: str | None = None,
               catalogues: list[Path] = (), max_tiles: int | None = None):
    """The app of ``run_dir``. ``max_tiles``: the most tiles a job may predict (None: what
    the chosen model predicts in about JOB_SECONDS at its measured speed)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse

    run = ServedRun(run_dir, basemap, catalogues, max_tiles)

    def answer(status: int | None):
        async def handle(request, exc):
            code = status or getattr(exc, "status", None) or getattr(exc, "status_code", 500)
            message = exc.detail if isinstance(exc, HTTPException) else str(exc)
            return JSONResponse(error_body(message, getattr(exc, "field", None)), status_code=code)
        return handle

    async def bug(request, exc):  # not the user's doing: one line for them, the traceback for the log
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body(f"internal error ({type(exc).__name__}); the server's log has the details"),
                            status_code=500)

    hosts = None if token else LOOPBACK_HOSTS  # beyond this machine the token is the guard
    application = Starlette(
        middleware=[Middleware(RequestLimits, hosts=hosts), Middleware(TokenGuard, token=token)],
        routes=run.routes(),
        exception_handlers={**{error: answer(status) for error, status in error_statuses().items()}, Exception: bug},
        lifespan=_stopping(run.queue),
    )
    application.state.queue = run.queue
    return application


def _stopping(queue):
    """The server's lifespan: at shutdown, cancel the jobs and wait for the running one."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        queue.close()

    return lifespan


def submit_job(root: Path, queue, report: dict, job: JobRequest, catalogues: list[Path] = (),
               max_tiles: int | None = None):
    """A job from the page's request: the model by id, a lon/lat box, a date, and the
    catalogue: "recipe" (the default: the recipe's own source) or the index of one the server
    was started with (--catalog; the page never names a path). Sized before it is queued
    (jobs.size_job): an area too large for the server or with no scene at that date is
    refused now, not after minutes of nodata."""
    from instageo.deploy import jobs
    from instageo.engine.bundle import read_bundle
    from instageo.errors import InstageoError

    models = {m["id"]: m for m in models_of(root, report)}
    model = models.get(job.model)
    if model is None:
        raise BadInput(f"model '{job.model}' is not valid, should be one of {sorted(models)}", "model")
    bundle_dir = root / model["bundle"]
    bundle = read_bundle(bundle_dir)
    if job.catalog == "recipe":
        catalog = run_catalogue(root, report) if bundle["source"]["kind"] == "catalog" else None
    elif job.catalog < len(catalogues):
        catalog = catalogues[job.catalog]
    else:
        valid = "'recipe'" + (f" or 0..{len(catalogues) - 1}" if catalogues else " (serve was given no --catalog)")
        raise BadInput(f"catalog {job.catalog!r} is not valid, should be {valid}", "catalog")
    try:
        jobs.size_job(root, bundle_dir, bundle, job.bbox, job.date, catalog,
                      jobs.tile_budget(max_tiles, model))
    except InputError as exc:
        raise BadInput(str(exc), "bbox", status=422) from None
    try:
        return queue.submit(model["name"], bundle_dir, job.bbox, job.date, catalog)
    except InstageoError as exc:
        raise BadInput(str(exc), status=429) from None
