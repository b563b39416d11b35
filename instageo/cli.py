"""`instarun`: the command line. The only place exceptions become exit codes.

Exit codes: 0 ok, 2 bad recipe or bad input, 3 data source unreachable or empty, 1 other.
"""

from __future__ import annotations

import difflib
import errno
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from instageo.errors import InstageoError, RecipeError
from instageo.recipe.defaults import INT8_TOLERANCE_PP, PREDICT_BATCH_SIZE, PREDICT_OVERLAP
from instageo.logs import console
from instageo.redact import redact


class _RecipeFirstGroup(TyperGroup):
    """`instarun RECIPE ...` means `instarun run RECIPE ...`; a word close to a command that
    is not a file is taken for a mistyped command."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        for index, arg in enumerate(args):
            if arg in ("--help", "-h"):
                break
            if not arg.startswith("-"):
                if arg not in self.commands:
                    close = difflib.get_close_matches(arg, list(self.commands), n=1, cutoff=0.6)
                    if close and not Path(arg).exists():
                        ctx.fail(f"no such command '{arg}'; did you mean '{close[0]}'? "
                                 "(or give a recipe file: instarun RECIPE)")
                    args = [*args[:index], "run", *args[index:]]
                break
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RecipeFirstGroup,
    rich_markup_mode=None,  # click's plain help: rich's formatter costs ~100 ms of every start
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Run a geospatial ML recipe: STAC search -> chips -> teacher -> students -> ONNX -> "
    "prediction -> map viewer, with every stage cached by content.\n\n"
    "Usage: instarun RECIPE [OPTIONS], or one of the commands below.",
)

RecipeArg = Annotated[Path, typer.Argument(help="recipe YAML file", show_default=False)]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="override a field: a.b=v; a.b=1,2,3 makes a sweep", show_default=False),
]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="folder holding runs/<recipe>/")]
UntilOpt = Annotated[Optional[str], typer.Option("--until", help="stop after this stage")]
ForceOpt = Annotated[
    Optional[list[str]], typer.Option("--force", help="re-run this stage (and what follows)")
]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    """Global options."""


def _pipeline(ctx: typer.Context):
    pipeline = (ctx.obj or {}).get("pipeline")
    if pipeline is None:
        from instageo.pipeline import default_pipeline

        pipeline = default_pipeline()
    return pipeline


@app.command("run")
def run_command(ctx: typer.Context, recipe: RecipeArg, set_: SetOpt = None,
                runs_dir: RunsDirOpt = Path("runs"), until: UntilOpt = None,
                force: ForceOpt = None) -> None:
    """Validate, plan and run a recipe, skipping cached stages."""
    from instageo.data.observations import check_observations
    from instageo.recipe import expand, load_recipe
    from instageo.runner import run_recipe

    loaded = load_recipe(recipe, set_)
    observations = check_observations(loaded)  # a bad label fails here, before any search
    if observations is not None and until not in ("search", "chips"):
        from instageo.model.budget import check_training_memory

        for variant in expand(loaded):  # at most one chip per point or polygon
            check_training_memory(variant.recipe, len(observations), "one per observation at most")
    if until is None or until in ("predict", "teacher_predict", "viewer"):
        from instageo.deploy.predict import check_areas

        for variant in expand(loaded):  # an area too large, or off the catalogue: before training
            check_areas(variant.recipe, observations)
    with console() as progress:
        report = run_recipe(loaded, _pipeline(ctx), runs_dir, until, force or (), progress)
    from instageo.runner import ranks

    if not ranks.is_main():  # another process of `accelerate launch`: rank 0 says what happened
        return
    run_dir = runs_dir / loaded.name
    ran = sum(not stage["cached"] for stage in report["stages"])
    typer.echo(f"{loaded.name}: {ran} stage(s) run, {len(report['stages']) - ran} cached; "
               f"report: {run_dir / 'report.md'}")
    if report.get("viewer"):
        typer.echo(f"viewer: {run_dir / 'viewer' / 'index.html'} (open it in a browser; no server needed)")
    if report.get("compare"):
        typer.echo(f"students side by side: {run_dir / report['compare']}")


@app.command("predict")
def predict_command(
    bundle: Annotated[Path, typer.Argument(help="an export stage's bundle/ folder (model.onnx + bundle.json)")],
    bbox: Annotated[str, typer.Option("--bbox", help="west,south,east,north in degrees", show_default=False)],
    date: Annotated[str, typer.Option("--date", help="YYYY-MM-DD to predict for", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="folder for prediction.tif, confidence.tif, rgb.tif")],
    catalog: Annotated[Optional[Path], typer.Option("--catalog", help="a local STAC catalog.json to read "
                                                    "instead of the bundle's source")] = None,
    stac: Annotated[Optional[str], typer.Option("--stac", help="a STAC API URL to read instead")] = None,
    collection: Annotated[Optional[list[str]], typer.Option("--collection", help="collection id (repeatable)")] = None,
    overlap: Annotated[float, typer.Option(min=0.0, max=0.99, help="fraction of a chip neighbouring tiles "
                                           "share")] = PREDICT_OVERLAP,
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="tiles per ONNX call")] = PREDICT_BATCH_SIZE,
    int8_tolerance_pp: Annotated[float, typer.Option(min=0, max=100, help="use the bundle's int8 model when it "
                                                     "lost at most this much val mIoU (pp)")] = INT8_TOLERANCE_PP,
    float32: Annotated[bool, typer.Option("--float32", help="never the int8 model")] = False,
) -> None:
    """Run an exported bundle over a new area and date: the predict stage's selection,
    reading and COGs, without the recipe."""
    from instageo.dates import iso_date
    from instageo.deploy.standalone import bundle_folder, check_bundle, check_out_folder, predict_bundle
    from instageo.engine.bundle import read_bundle
    from instageo.errors import InputError

    try:
        box = tuple(float(v) for v in bbox.split(","))
    except ValueError:
        box = ()
    # the comparisons are False for NaN, and infinities fall outside the ranges
    if len(box) != 4 or not (-180 <= box[0] < box[2] <= 180 and -90 <= box[1] < box[3] <= 90):
        raise InputError(f"--bbox {bbox}: should be west,south,east,north in degrees, west < east, south < north")
    try:
        day = iso_date(date)
    except ValueError as exc:
        raise InputError(f"--date {exc}") from None
    if catalog is not None and stac is not None:
        raise InputError("--catalog and --stac: give one")
    check_out_folder(out)
    # a bundle from elsewhere is checked whole here; the app's jobs run the run's own exports
    folder = bundle_folder(bundle)
    check_bundle(folder, read_bundle(folder))
    with console() as progress, progress:
        summary = predict_bundle(bundle, box, day, out, progress.track, catalog, stac, collection, overlap, batch_size,
                                 None if float32 else int8_tolerance_pp)
    typer.echo(f"{out / 'prediction.tif'}: {summary['width']} x {summary['height']} px, {summary['tiles']} tiles, "
               f"{summary['items']} item(s) from {summary['catalogue']}; model {summary['model']} "
               f"({summary['model_why']})")


@app.command("validate")
def validate_command(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Check a recipe: exit 0, or exit 2 listing every problem as file:line: field: message."""
    from instageo.data.observations import check_observations
    from instageo.recipe import expand, load_recipe

    loaded = load_recipe(recipe, set_)
    check_observations(loaded)
    variants = expand(loaded)
    names = ", ".join(v.name for v in variants)
    typer.echo(f"{recipe}: ok ({loaded.name}, {len(variants)} variant(s): {names})")


@app.command("plan")
def plan_command(ctx: typer.Context, recipe: RecipeArg, set_: SetOpt = None,
                 runs_dir: RunsDirOpt = Path("runs"), until: UntilOpt = None,
                 force: ForceOpt = None,
                 estimate: Annotated[bool, typer.Option("--estimate", help="also count the items, chips, bytes "
                                                        "and tiles, and time the training and prediction")] = False,
                 ) -> None:
    """Show each stage: cached or to run, and why."""
    from instageo.recipe import load_recipe
    from instageo.runner import plan_recipe

    loaded = load_recipe(recipe, set_)
    _, decisions = plan_recipe(loaded, _pipeline(ctx), runs_dir, until, force or ())
    rows = [("stage", "variants", "key", "status", "reason")]
    for decision in decisions:
        planned = decision.planned
        variants = ", ".join(planned.variants)
        status = "cached" if decision.cached else "run"
        rows.append((planned.name, variants, planned.key[:12], status, decision.reason))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    if not decisions:
        typer.echo("(the pipeline has no stages)")
    elif estimate:
        from instageo.deploy.estimate import estimate_plan, rows_text

        with console() as progress, progress:
            rows, source = estimate_plan(decisions, runs_dir.resolve() / loaded.name, progress)
        typer.echo(f"\nestimate (from {source}; times measured now on this machine):")
        for line in rows_text(rows):
            typer.echo(line)


@app.command("verify")
def verify_command(ctx: typer.Context, recipe: RecipeArg, set_: SetOpt = None,
                   runs_dir: RunsDirOpt = Path("runs")) -> None:
    """Rebuild the chips from the lock file and compare checksums (exit 1 on any difference);
    also check the chips and every stage folder already in the runs folder."""
    from instageo.data.verify import verify
    from instageo.errors import VerificationError
    from instageo.recipe import load_recipe

    loaded = load_recipe(recipe, set_)
    result = verify(loaded, _pipeline(ctx), runs_dir)
    typer.echo(f"{loaded.name}: {len(result.identical)} chip(s) rebuilt identical, "
               f"{len(result.differing)} differing, {len(result.missing)} missing, "
               f"{len(result.extra)} extra; {len(result.altered)} file(s) altered in {runs_dir}; "
               f"{len(result.stages) - len(result.damaged)} of {len(result.stages)} stage folder(s) intact")
    for label, chips in (("differing", result.differing), ("missing", result.missing),
                         ("extra", result.extra), ("altered", result.altered)):
        for chip in chips:
            typer.echo(f"  {label}: {chip}")
    for folder, why in result.damaged.items():
        typer.echo(f"  damaged: {folder}: {why}")
    if not result.ok:
        chips = result.differing or result.missing or result.extra or result.altered
        what = "chips differ from the lock file" if chips else "stage folders differ from their manifests"
        raise VerificationError(f"{loaded.name}: {what}; `instarun {recipe}` recomputes what is damaged")


@app.command("serve")
def serve_command(
    run_dir: Annotated[Path, typer.Argument(help="runs/<recipe> folder of a finished run")],
    host: Annotated[str, typer.Option(help="address to bind; 127.0.0.1 keeps it on this machine")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    header_timeout: Annotated[float, typer.Option(min=0.1, max=600, help="seconds a client has to send a "
                                                  "request's headers before it is disconnected")] = 10.0,
    token: Annotated[Optional[str], typer.Option(help="a secret every request must carry; required to bind "
                                                 "beyond 127.0.0.1 (other users see it in `ps`: prefer "
                                                 "--token-file or $INSTAGEO_TOKEN)", show_default=False)] = None,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", help="a file whose first line is the "
                                                       "token", show_default=False)] = None,
    catalog: Annotated[Optional[list[Path]], typer.Option("--catalog", help="a local STAC catalog.json the app may "
                                                         "also predict from (repeatable; the recipe's is the default)",
                                                         show_default=False)] = None,
    basemap: Annotated[Optional[str], typer.Option(help="an XYZ tile URL to draw under the maps, e.g. "
                                                   "https://tile.openstreetmap.org/{z}/{x}/{y}.png (default: none, "
                                                   "nothing leaves the machine)", show_default=False)] = None,
    max_tiles: Annotated[Optional[int], typer.Option("--max-tiles", min=1, help="the most tiles a prediction job may "
                                                     "have (default: what the chosen model predicts in about 5 minutes "
                                                     "at its measured speed)", show_default=False)] = None,
) -> None:
    """Serve the map app of a run: its models, predictions and observations; draw an area,
    run a model over it, inspect and compare the maps."""
    from instageo.errors import InputError

    if not (run_dir / "report.json").is_file():
        raise InputError(f"{run_dir}: no report.json; give a runs/<recipe> folder of a finished run")
    from instageo.deploy.guards import serve_token, serving_line

    token, token_from = serve_token(token, token_file)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        raise InputError(f"--host {host}: serving beyond this machine needs a token (--token-file FILE, "
                         "$INSTAGEO_TOKEN or --token SECRET; checked on every request); or keep --host 127.0.0.1")
    if token is not None and len(token) < 16:
        raise InputError(f"{token_from}: use at least 16 characters (it is all that guards the run)")
    import socket

    import uvicorn

    from instageo.deploy.guards import guarded_protocol
    from instageo.deploy.server import create_app

    try:  # a busy port is one line now, not after the server has said it is serving
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as exc:
        raise InputError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    for path in catalog or []:
        if not path.is_file():
            raise InputError(f"--catalog {path}: no such file; give a STAC catalog.json")
    application = create_app(run_dir, token=token, basemap=basemap, catalogues=[p.resolve() for p in catalog or []],
                             max_tiles=max_tiles)
    typer.echo(f"serving {run_dir} on {serving_line(host, port, token)}")
    # idle keep-alive connections close after 5 s, slow request heads after header_timeout;
    # past 200 connections at once, new requests are answered 503
    uvicorn.run(application, host=host, port=port, log_level="warning", http=guarded_protocol(header_timeout),
                timeout_keep_alive=5, limit_concurrency=200)


from instageo.cli_catalog import catalog_app, demo_data_command  # noqa: E402 (after app: its commands join it)

app.command("demo-data")(demo_data_command)
app.add_typer(catalog_app, name="catalog")


@app.command("schema")
def schema_command(
    of: Annotated[str, typer.Argument(help="recipe, report (report.json) or bundle (bundle.json)")] = "recipe",
) -> None:
    """Print a JSON Schema: the recipe's, report.json's or bundle.json's (schemas/<of>.schema.json)."""
    from instageo.errors import InputError
    from instageo.recipe import schema_text

    if of not in ("recipe", "report", "bundle"):
        raise InputError(f"schema {of}: should be one of recipe, report, bundle")
    typer.echo(schema_text(of), nl=False)


INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


def main(argv: Sequence[str] | None = None, pipeline=None) -> int:
    """Entry point. ``pipeline`` replaces the product stages (tests use their own)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:]:  # a global option, taken anywhere on the line
        args = ["--debug", *(a for a in args if a != "--debug")]
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="instarun", standalone_mode=False,
                              obj={"pipeline": pipeline})
        if result == INTERRUPTED:  # typer turns Ctrl-C into Exit(130), returned here
            raise KeyboardInterrupt
        return result if isinstance(result, int) else 0
    except RecipeError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except InstageoError as exc:
        if "--debug" in args:
            traceback.print_exc()
        print(redact(f"error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        from instageo.errors import DiskFullError, disk_full, disk_full_message

        if disk_full(exc) is None:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and exc.filename:
                if "--debug" in args:
                    traceback.print_exc()
                from instageo.errors import not_writable_message

                print(f"error: {not_writable_message(exc)}", file=sys.stderr)
                return 1
            raise
        if "--debug" in args:
            traceback.print_exc()
        where = Path(exc.filename).parent if exc.filename else "the runs folder"
        print(f"error: {disk_full_message(exc, where)}", file=sys.stderr)
        return DiskFullError.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument
        exc.show()  # type: ignore[attr-defined]
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted; rerun to resume (finished stages stay cached)", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
