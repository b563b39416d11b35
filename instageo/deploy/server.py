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
from instageo.errors import InputError

log = logging.getLogger("instageo.serve")

MAX_ZOOM = 22
MAX_URL = 1024  # bytes of path and query; nothing this app serves needs more
MAX_BODY = 4096  # bytes of a job request (JSON: model, bbox, date)
BODY_ROUTES = ("/api/jobs",)  # the only paths that take a POST with a body
LAYERS = ("prediction", "confidence", "rgb")
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
SERVED = ("report.json", "report.md", "sweep.png", "compare.html", "app/", "viewer/")  # top-level files and folders
SERVED_STAGES = ("viewer-", "predict-", "teacher_predict-")  # stage folders the map reads from
NEVER = (".pt", ".log", ".lock.json")


class NotFound(Exception):
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
    return relative in SERVED or relative.startswith(tuple(f for f in SERVED if f.endswith("/")))


def safe_path(root: Path, relative: str) -> Path:
    """``relative`` inside ``root`` (after resolving symlinks), else NotFound. A name the
    file system refuses (too long, a loop of links) is not found either."""
    if relative.startswith("/") or "\x00" in relative:
        raise NotFound(relative)
    try:
        candidate = (root / relative).resolve()
        if (candidate != root and root not in candidate.parents) or not candidate.is_file():
            raise NotFound(relative)
    except (OSError, RuntimeError, ValueError):  # ENAMETOOLONG, ELOOP, a bad name
        raise NotFound(relative) from None
    return candidate


def served_file(root: Path, relative: str) -> Path:
    """The run file ``relative`` names (as decoded from the URL), if the map needs it, else
    NotFound. The allow-list is checked on the resolved path (``..``, symlinks and encoded
    slashes gone), never on the string asked for: ``stages/predict-x/../export-y/...``
    starts like a prediction and names a bundle."""
    path = safe_path(root, relative)
    if not servable(path.relative_to(root).as_posix()):
        raise NotFound(relative)
    return path


def models_of(root: Path, report: dict) -> list[dict]:
    """Every exported model of the run: the teacher (when exported) and each student, with
    its bundle folder, test mIoU and ONNX speed (chips/s, the speed stage's median)."""
    found = []
    teacher = report.get("teacher") or {}
    if teacher.get("onnx"):
        found.append({"id": "teacher", "name": f"teacher (depth {teacher.get('depth')})", "depth": teacher.get("depth"),
                      "bundle": str(Path(teacher["onnx"]).parent), "miou": (teacher.get("metrics") or {}).get("miou"),
                      "chips_per_s": (teacher.get("throughput") or {}).get("onnx_img_s")})
    for variant in report.get("variants", []):
        if variant.get("onnx"):
            found.append({"id": f"student-{variant['name']}", "depth": variant.get("student_depth"),
                          "name": f"student depth {variant.get('student_depth')} ({variant['name']})",
                          "bundle": str(Path(variant["onnx"]).parent),
                          "miou": (variant.get("metrics") or {}).get("miou"),
                          "chips_per_s": (variant.get("throughput") or {}).get("onnx_img_s")})
    return found


def predictions_of(root: Path, report: dict, jobs: list[dict]) -> list[dict]:
    """The finished predictions: the stages' (each student's, the teacher's) and those of
    ``jobs`` (JobQueue.finished), each with its layers (COG paths relative to the run folder)
    and its date."""
    found = []

    def add(pid: str, name: str, folder: str, area: dict | None, model: str | None) -> None:
        layers = {layer: f"{folder}/{layer}.tif" for layer in LAYERS if (root / folder / f"{layer}.tif").is_file()}
        if "prediction" in layers:
            found.append({"id": pid, "name": name, "layers": layers, "model": model, "version": Path(folder).name,
                          "date": (area or {}).get("date"), "bbox": (area or {}).get("bbox")})

    for variant in report.get("variants", []):
        if variant.get("prediction"):
            add(f"student-{variant['name']}", f"student depth {variant.get('student_depth')} ({variant['name']})",
                str(Path(variant["prediction"]).parent), variant.get("prediction_area"), f"student-{variant['name']}")
    teacher = report.get("teacher") or {}
    if teacher.get("prediction"):
        add("teacher", "teacher", str(Path(teacher["prediction"]).parent), teacher.get("prediction_area"), "teacher")
    for job in jobs:
        add(f"job-{job['key']}", f"{job['model']}, {job['date']}", job["result"],
            {"date": job["date"], "bbox": job["bbox"]}, None)
        if found and found[-1]["id"] == f"job-{job['key']}":
            found[-1].update(bundle=job["bundle"], catalog=job.get("catalog"))
    return found


def inputs_of(root: Path, report: dict, prediction: dict, lon: float, lat: float) -> dict:
    """What the model read at a point of a prediction: each step's date and band values (the
    stage's items from the search stage folder, a job's from its own folder)."""
    import datetime as dt
    import logging

    from instageo.deploy import jobs, predict
    from instageo.deploy.standalone import read_bundle

    stages = {s["name"]: s for s in report.get("stages", [])}
    if not prediction.get("bbox") or not prediction.get("date"):
        return {"reason": "this map does not record its area and date (several areas)"}
    if prediction["id"].startswith("job-"):
        bundle_dir = root / prediction["bundle"]
        items = json.loads((root / Path(prediction["layers"]["prediction"]).parent / "items.json").read_text())
        base = jobs.source_dir(root, read_bundle(bundle_dir))
        catalog = Path(prediction["catalog"]) if prediction.get("catalog") else None
    else:
        models = {m["id"]: m for m in models_of(root, report)}
        if prediction["model"] not in models or "search" not in stages:
            return {"reason": "the model or the search stage of this map is not in the run"}
        bundle_dir = root / models[prediction["model"]]["bundle"]
        base = root / Path(stages["search"]["outputs"]["items"]).parent
        items = json.loads((base / "items.json").read_text())
        fresh = root / Path(prediction["layers"]["prediction"]).parent / "items.json"
        if fresh.is_file():  # the stage searched afresh for its area or date
            items = {**items, **json.loads(fresh.read_text())}
        catalog = _run_catalogue(root, report)
    bundle = read_bundle(bundle_dir)
    date = dt.date.fromisoformat(prediction["date"])
    recipe = jobs.recipe_for_area(bundle, catalog, tuple(prediction["bbox"]), date)
    return predict.inputs_at(recipe, items, base, date, lon, lat, logging.getLogger("instageo.serve"))


def observations_of(root: Path, report: dict) -> dict:
    """The run's observations as GeoJSON points: id, date, label (the class name) and split."""
    import csv

    stages = {s["name"]: s["outputs"] for s in report.get("stages", [])}
    if "chips" not in stages or "search" not in stages:
        return {"type": "FeatureCollection", "features": []}
    classes = (report.get("task") or {}).get("classes", [])
    labels = {}
    with open(root / stages["search"]["observations"], newline="") as handle:
        for row in csv.DictReader(handle):
            labels[row["id"]] = row.get("label")
    features = []
    with open(root / stages["chips"]["index"], newline="") as handle:
        for row in csv.DictReader(handle):
            label = labels.get(row["observation"])
            name = classes[int(float(label))] if label not in (None, "") and float(label).is_integer() \
                and 0 <= int(float(label)) < len(classes) else label
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(row["lon"]), float(row["lat"])]},
                             "properties": {"id": row["observation"], "date": row["date"], "split": row.get("split") or "",
                                            "label": name}})
    return {"type": "FeatureCollection", "features": features}


def point_values(root: Path, prediction: dict, classes: list[str], lon: float, lat: float) -> dict:
    """Class, confidence and input colour of one prediction at a lon/lat point."""
    import rasterio
    from rasterio.warp import transform

    found: dict = {"lon": lon, "lat": lat}
    for layer, path in prediction["layers"].items():
        with rasterio.open(root / path) as dataset:
            (x,), (y,) = transform("EPSG:4326", dataset.crs, [lon], [lat])
            row, column = dataset.index(x, y)
            if not (0 <= row < dataset.height and 0 <= column < dataset.width):
                return {**found, "outside": True}
            values = dataset.read(window=((row, row + 1), (column, column + 1)))[:, 0, 0]
        if layer == "prediction":
            value = int(values[0])
            found["class"] = None if value == 255 else classes[value] if value < len(classes) else value
        elif layer == "confidence":
            found["confidence"] = None if values[0] != values[0] else round(float(values[0]), 4)
        else:
            found["rgb"] = [int(v) for v in values]
    return found


def create_app(run_dir: Path, token: str | None = None, basemap: str | None = None,
               catalogues: list[Path] = (), max_tiles: int | None = None):
    """The app of ``run_dir``. ``max_tiles``: the most tiles a job may predict (None: what
    the chosen model predicts in about JOB_SECONDS at its measured speed)."""
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    from instageo.deploy.jobs import JobQueue
    from instageo.deploy.viewer import render_tile

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
    queue = JobQueue(root)

    def home(request):
        return FileResponse(APP_FILES / "index.html")

    def app_file(request):
        name = request.path_params["name"]
        if name not in ("app.js", "app.css"):
            raise NotFound(name)
        return FileResponse(APP_FILES / name)

    def leaflet(request):
        import xstatic.pkg.leaflet as package

        return FileResponse(safe_path(Path(package.BASE_DIR).resolve(), request.path_params["path"]))

    def files(request):
        return FileResponse(served_file(root, request.path_params["path"]))

    def run_info(request):
        report = current_report()
        predictions = predictions_of(root, report, queue.finished())
        return JSONResponse({"name": root.name, "task": report.get("task"), "models": models_of(root, report),
                             "predictions": predictions, "basemap": basemap,
                             "catalogues": [{"id": "recipe", "name": "the recipe's"}]
                             + [{"id": i, "name": path.name if path.name != "catalog.json" else str(path.parent.name)}
                                for i, path in enumerate(catalogues)],
                             "colours": _colours(root, report)})

    def observations(request):
        return JSONResponse(observations_of(root, current_report()))

    def prediction_by_id(pid: str) -> dict:
        # every tile asks: read only the job it names, not every job.json of the run
        jobs = queue.finished(pid.removeprefix("job-")) if pid.startswith("job-") else []
        for prediction in predictions_of(root, current_report(), jobs):
            if prediction["id"] == pid:
                return prediction
        raise NotFound(f"no prediction '{pid}'")

    def tile_of(path: str, layer: str, z: int, x: int, y: int) -> Response:
        if not 0 <= z <= MAX_ZOOM:
            raise BadInput(f"zoom {z} is outside 0..{MAX_ZOOM}", "z")
        try:
            with Reader(str(safe_path(root, path))) as reader:
                return Response(render_tile(reader, layer, x, y, z), media_type="image/png")
        except TileOutsideBounds:
            raise
        except (RasterioError, CPLE_BaseError) as exc:  # a damaged COG: one line, no traceback
            raise Unreadable(f"{path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def tile(request):  # the recommended prediction's layers (the static viewer's and older links)
        report = current_report()
        layer = request.path_params["layer"]
        if layer not in LAYERS or not report.get(layer):
            raise BadInput(f"layer '{layer}' is not valid, should be one of "
                           f"{[name for name in LAYERS if report.get(name)]}", "layer")
        return tile_of(report[layer], layer, *(request.path_params[k] for k in ("z", "x", "y")))

    def prediction_tile(request):
        prediction = prediction_by_id(request.path_params["pid"])
        layer = request.path_params["layer"]
        if layer not in prediction["layers"]:
            raise BadInput(f"layer '{layer}' is not valid, should be one of {sorted(prediction['layers'])}", "layer")
        return tile_of(prediction["layers"][layer], layer, *(request.path_params[k] for k in ("z", "x", "y")))

    def point(request):
        query = parse_query(request.query_params, PointQuery)
        prediction = prediction_by_id(query.prediction)
        report = current_report()
        found = point_values(root, prediction, (report.get("task") or {}).get("classes", []), query.lon, query.lat)
        if query.inputs and not found.get("outside"):
            found["inputs"] = inputs_of(root, report, prediction, query.lon, query.lat)
        return JSONResponse(found)

    async def submit(request):
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            raise BadInput("send the job as application/json")
        job = parse_body(await request.body(), JobRequest)
        # sizing reads the catalogue (a file, or the server's STAC API): off the event loop
        submitted = await run_in_threadpool(submit_job, root, queue, current_report(), job, list(catalogues), max_tiles)
        return JSONResponse(submitted.public(), status_code=202)

    def job_status(request):
        job = queue.jobs.get(request.path_params["job"])
        if job is None:
            raise NotFound(f"no job '{request.path_params['job']}'")
        return JSONResponse(job.public())

    def job_cancel(request):
        if request.path_params["job"] not in queue.jobs:
            raise NotFound(f"no job '{request.path_params['job']}'")
        return JSONResponse(queue.cancel(request.path_params["job"]).public())

    def errors(status: int | None = None):
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
        routes=[Route("/", home), Route("/app/{name}", app_file), Route("/leaflet/{path:path}", leaflet),
                Route("/files/{path:path}", files),
                Route("/api/run", run_info), Route("/api/observations", observations), Route("/api/point", point),
                Route("/api/jobs", submit, methods=["POST"]), Route("/api/jobs/{job}", job_status),
                Route("/api/jobs/{job}/cancel", job_cancel, methods=["POST"]),
                Route("/tiles/{layer}/{z:int}/{x:int}/{y:int}.png", tile),
                Route("/p/{pid}/tiles/{layer}/{z:int}/{x:int}/{y:int}.png", prediction_tile)],
        exception_handlers={NotFound: errors(404), TileOutsideBounds: errors(404), HTTPException: errors(),
                            BadInput: errors(), Unreadable: errors(500), InputError: errors(400), Exception: bug},
        lifespan=_stopping(queue),
    )
    application.state.queue = queue
    return application


APP_FILES = Path(__file__).parent / "app"


def _stopping(queue):
    """The server's lifespan: at shutdown, cancel the jobs and wait for the running one."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        queue.close()

    return lifespan


def _colours(root: Path, report: dict) -> list[str]:
    from instageo.data.quicklook import class_colours

    task = report.get("task") or {}
    return class_colours(len(task.get("classes", [])), task.get("colors"))


def submit_job(root: Path, queue, report: dict, job: JobRequest, catalogues: list[Path] = (),
               max_tiles: int | None = None):
    """A job from the page's request: the model by id, a lon/lat box, a date, and the
    catalogue: "recipe" (the default: the recipe's own source) or the index of one the server
    was started with (--catalog; the page never names a path). Sized before it is queued
    (jobs.size_job): an area too large for the server or with no scene at that date is
    refused now, not after minutes of nodata."""
    from instageo.deploy import jobs
    from instageo.deploy.standalone import read_bundle
    from instageo.errors import InstageoError

    models = {m["id"]: m for m in models_of(root, report)}
    model = models.get(job.model)
    if model is None:
        raise BadInput(f"model '{job.model}' is not valid, should be one of {sorted(models)}", "model")
    bundle_dir = root / model["bundle"]
    bundle = read_bundle(bundle_dir)
    if job.catalog == "recipe":
        catalog = _run_catalogue(root, report) if bundle["source"]["kind"] == "catalog" else None
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


def _run_catalogue(root: Path, report: dict) -> Path | None:
    """The local catalog.json the run's recipe reads (report.json's source)."""
    source = report.get("source") or {}
    return Path(source["path"]) if source.get("kind") == "catalog" and source.get("path") else None


class TokenGuard:
    """ASGI middleware: with a token, every request carries it (header ``Authorization:
    Bearer T``, the cookie the page got, or ``?token=T`` on the first visit), else 401."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.token:
            await self.app(scope, receive, send)
            return
        import hmac
        from http.cookies import SimpleCookie
        from urllib.parse import parse_qs

        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"").decode(errors="replace").removeprefix("Bearer ")
        cookie = SimpleCookie(headers.get(b"cookie", b"").decode(errors="replace"))
        from_cookie = cookie["instageo_token"].value if "instageo_token" in cookie else ""
        from_query = (parse_qs((scope.get("query_string") or b"").decode(errors="replace")).get("token") or [""])[0]
        if not any(hmac.compare_digest(candidate.encode(), self.token.encode())
                   for candidate in (given, from_cookie, from_query) if candidate):
            from starlette.responses import JSONResponse

            await JSONResponse(error_body("this server needs its token (open the URL it printed)", "token"),
                               status_code=401)(scope, receive, send)
            return
        if from_query:  # the first visit: the page's later requests (tiles too) carry the cookie
            async def send_with_cookie(message):
                if message["type"] == "http.response.start":
                    message.setdefault("headers", [])
                    message["headers"] = list(message["headers"]) + [
                        (b"set-cookie", f"instageo_token={self.token}; HttpOnly; SameSite=Strict; Path=/".encode())]
                await send(message)
            await self.app(scope, receive, send_with_cookie)
            return
        await self.app(scope, receive, send)


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
    """ASGI middleware, before any route: requests must name an allowed host (``hosts``;
    None: any), only bodiless GET/HEAD requests with a URL under MAX_URL bytes get in, POSTs
    of at most MAX_BODY bytes to the job route and bodiless POSTs to cancel a job. Refusals
    have the app's error shape."""

    def __init__(self, app, hosts: list[str] | None):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal:
                from starlette.responses import JSONResponse

                await JSONResponse(error_body(refusal[1], refusal[2]), status_code=refusal[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope) -> tuple[int, str, str | None] | None:
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        name = host[:host.index("]") + 1] if host.startswith("[") and "]" in host else host.split(":")[0]
        if self.hosts is not None and name not in self.hosts:
            return 400, f"host {name!r} is not served (a page from another site cannot read this run)", "host"
        length = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        posting = scope["method"] == "POST" and scope["path"] in BODY_ROUTES
        cancelling = scope["method"] == "POST" and scope["path"].startswith("/api/jobs/") \
            and scope["path"].endswith("/cancel")
        size = headers.get(b"content-length", b"0")
        if scope["method"] not in ("GET", "HEAD") and not (posting or cancelling):
            return 405, "only GET and HEAD here", None
        if posting and b"content-length" not in headers:
            return 411, "a job request needs a Content-Length", None
        if posting and (not size.isdigit() or int(size) > MAX_BODY):
            return 413, f"a job request is at most {MAX_BODY} bytes", None
        if not posting and (size.strip() not in (b"0", b"") or b"transfer-encoding" in headers):
            return 413, "this request carries no body", None
        if length > MAX_URL:
            return 414, f"URL longer than {MAX_URL} bytes", None
        return None
