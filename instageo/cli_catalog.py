"""`instarun demo-data` and `instarun catalog build`: the commands that make data to run on
(the demo scene, a static STAC catalogue of a folder of rasters). cli.py adds them to the app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def demo_data_command(
    out: Annotated[Path, typer.Argument(help="folder to write the scene into")],
    seed: Annotated[int, typer.Option(help="random seed (same seed, same scene)")] = 0,
    size: Annotated[int, typer.Option(min=64, max=8192, help="pixels per side")] = 384,
    acquisitions: Annotated[int, typer.Option(min=1, max=365, help="dates, 16 days apart")] = 12,
    points: Annotated[int, typer.Option(min=1, help="point observations")] = 200,
    quicklook: Annotated[bool, typer.Option(help="also write quicklook.png")] = True,
) -> None:
    """Write the offline demo scene: HLS-like COGs, a STAC catalogue and observations."""
    from instageo.data import demo

    scene = demo.generate(out, seed, size, acquisitions, points)
    typer.echo(f"catalogue: {scene.catalog}\nobservations: {scene.observations}")
    if quicklook:
        demo.quicklook(scene, out / "quicklook.png")
        typer.echo(f"quicklook: {out / 'quicklook.png'}")


catalog_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True, help="Local STAC catalogues.")


@catalog_app.command("build")
def catalog_build_command(
    folder: Annotated[Path, typer.Argument(help="folder of GeoTIFF/JP2 scenes")],
    out: Annotated[Path, typer.Option("--out", help="folder for catalog.json and items")],
    collection: Annotated[str, typer.Option(help="collection id")] = "local",
    datetime: Annotated[Optional[str], typer.Option("--datetime", help="YYYY-MM-DD for all scenes")] = None,
    date_pattern: Annotated[Optional[str], typer.Option(
        "--date-pattern", help="regex with named groups year, month, day (or year, doy)")] = None,
    dates: Annotated[Optional[Path], typer.Option("--dates", help="CSV with columns scene,date")] = None,
    preset: Annotated[Optional[str], typer.Option(
        "--preset", help="sensor preset of the files (default: detected from their names)")] = None,
    scale: Annotated[Optional[float], typer.Option(help="raw value x scale = reflectance, for every band")] = None,
    offset: Annotated[Optional[float], typer.Option(help="added after scaling, for every band")] = None,
    nodata: Annotated[Optional[float], typer.Option(help="raw value meaning no data, for every band")] = None,
) -> None:
    """Turn a folder of rasters into a static STAC catalogue (a `catalog` data source)."""
    from instageo.data.catalog_build import build_catalog, read_dates
    from instageo.dates import iso_date
    from instageo.errors import InputError

    try:
        fixed = iso_date(datetime) if datetime else None
    except ValueError as exc:
        raise InputError(f"--datetime {exc}") from None
    scaling = {k: v for k, v in (("scale", scale), ("offset", offset), ("nodata", nodata)) if v is not None}
    result = build_catalog(folder, out, collection, fixed, date_pattern,
                           read_dates(dates) if dates else None, preset, scaling)
    typer.echo(f"{result.catalog}: {result.items} item(s) in collection '{collection}'")
    typer.echo(f"  sensor preset: {result.preset}" if result.preset else
               "  sensor preset: unknown (recipes must set data.source.preset or data.source.bands)")
    for key, names in sorted(result.assets.items()):
        typer.echo(f"  asset {key}: bands {', '.join(names)}")
    if result.skipped:
        typer.echo(f"  skipped {len(result.skipped)} unreadable file(s), e.g. {result.skipped[0]}")
