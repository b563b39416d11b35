"""Polygon observations: any vector format GDAL/OGR reads (through pyogrio), one observation
per polygon at a point inside it, and the polygons written out for rasterising labels."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from instageo.data.catalogue import point_inside, split_at_antimeridian
from instageo.data.observation_base import (PARQUET, Labels, Observation, in_world, lonlat_transform, parquet_table,
                                            plain_value)
from instageo.errors import InputError
from instageo.recipe.models import PolygonObservations


def read_polygons(spec: PolygonObservations, labels: Labels, out: Path | None) -> list[Observation]:
    """One observation per polygon, at a point inside it, labelled through ``labels``. Any
    vector format GDAL/OGR reads (GeoPackage, Shapefile, GeoParquet, FlatGeobuf, GeoJSON),
    through pyogrio, in its own CRS (or ``spec.crs`` when it has none). The polygons are also
    written to ``out`` (GeoJSON, lon/lat, property ``class``) for rasterising."""
    import json

    import shapely
    from shapely.geometry import mapping

    path = Path(spec.path)
    layer = _read_vector(path)
    crs = spec.crs or _geojson_crs(path) or layer["crs"] or "EPSG:4326"
    to_lonlat = lonlat_transform(crs, path)
    fields = layer["fields"]
    if spec.label not in fields:
        raise InputError(f"{path}: no property '{spec.label}' (data.observations.label); it has {sorted(fields)}")
    if isinstance(spec.date, str) and spec.date not in fields:
        raise InputError(f"{path}: no property '{spec.date}' (data.observations.date: a property, or a "
                         f"YYYY-MM-DD date for every feature); it has {sorted(fields)}")
    observations, polygons = [], []
    seen: dict[tuple[bytes, dt.date], int] = {}
    for index, wkb in enumerate(layer["geometry"]):
        where = f"{path}: feature {index}"
        try:
            geometry = shapely.transform(shapely.from_wkb(wkb), to_lonlat, interleaved=False)
        except (TypeError, ValueError, shapely.errors.GEOSException):
            raise InputError(f"{where}: no valid geometry") from None
        if geometry is None or geometry.is_empty:
            raise InputError(f"{where}: empty geometry")
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise InputError(f"{where}: a {geometry.geom_type}, not a polygon (data.observations.kind: polygons)")
        if not geometry.is_valid:  # a label's area is ambiguous: the user fixes it, knowing which
            raise InputError(f"{where}: invalid polygon ({shapely.is_valid_reason(geometry)}); fix it "
                             "(e.g. QGIS 'Fix geometries' or ST_MakeValid) and run again")
        geometry = split_at_antimeridian(geometry)
        if not (in_world(*geometry.bounds[:2]) and in_world(*geometry.bounds[2:])):
            raise InputError(f"{where}: coordinates outside the world in {crs}")
        label = labels(plain_value(fields[spec.label][index]), f"{where} ({spec.label})")
        if label is None:  # the remap ignores this class
            continue
        if isinstance(spec.date, dt.date):
            date = spec.date
        else:
            text = str(plain_value(fields[spec.date][index]) or "")
            try:
                date = dt.date.fromisoformat(text[:10])
            except ValueError:
                raise InputError(f"{where}: {spec.date} {text!r} is not YYYY-MM-DD") from None
            if not 1900 <= date.year <= 2100:
                raise InputError(f"{where}: {spec.date} {text!r} is not between 1900 and 2100")
        signature = (shapely.normalize(geometry).wkb, date)
        if signature in seen:
            raise InputError(f"{where}: duplicate of feature {seen[signature]} (the same polygon and date)")
        seen[signature] = index
        lon, lat = point_inside(geometry)
        identifier = f"{path.stem}-{index:05d}"
        source = out.name if out is not None else path.name
        observations.append(Observation(identifier, lon, lat, date, float(label), None, source, "polygon"))
        polygons.append({"type": "Feature", "geometry": mapping(geometry), "properties": {"class": label}})
    if not observations:
        raise InputError(f"{path}: no polygons" + (" with a class the remap keeps" if spec.remap else ""))
    if out is not None:
        out.write_text(json.dumps({"type": "FeatureCollection", "features": polygons}))
    return observations


def _read_vector(path: Path) -> dict:
    """geometry (WKB), fields (name -> values) and crs of a vector file's first layer
    (GeoParquet through pyarrow: GDAL in pyogrio's wheel has no Parquet driver)."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    if path.suffix.lower() in PARQUET:
        return _read_geoparquet(path)
    try:
        meta, _, geometry, values = pyogrio.raw.read(path)
    except (DataSourceError, DataLayerError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable vector file ({str(exc).splitlines()[0]})") from None
    if geometry is None:
        raise InputError(f"{path}: has no geometries")
    return {"geometry": geometry, "crs": meta.get("crs"), "fields": dict(zip(meta["fields"], values))}


def _read_geoparquet(path: Path) -> dict:
    """A GeoParquet file's primary geometry column (WKB) and CRS (from its 'geo' metadata;
    none given means OGC:CRS84, lon/lat), its other columns as fields."""
    import json

    table = parquet_table(path)
    try:
        geo = json.loads((table.schema.metadata or {})[b"geo"])
        column = geo["primary_column"]
        crs = geo["columns"][column].get("crs")
    except (KeyError, ValueError, TypeError):
        raise InputError(f"{path}: not GeoParquet (no 'geo' metadata naming its geometry column)") from None
    if crs is not None:
        from pyproj import CRS

        crs = CRS.from_json_dict(crs).to_string()
    fields = {name: table.column(name).to_pylist() for name in table.column_names if name != column}
    return {"geometry": table.column(column).to_pylist(), "crs": crs or "EPSG:4326", "fields": fields}


def _geojson_crs(path: Path) -> str | None:
    """The old GeoJSON 'crs' member, which GDAL drops when it cannot use it: a file that
    names a CRS must name one we can use, rather than be read as lon/lat without a word."""
    import json

    if path.suffix.lower() not in (".geojson", ".json"):
        return None
    try:
        member = json.loads(path.read_text(encoding="utf-8")).get("crs")
    except (OSError, ValueError, AttributeError):
        return None
    if member is None:
        return None
    try:
        name = member["properties"]["name"].replace("urn:ogc:def:crs:", "").replace("::", ":")
    except (KeyError, TypeError, AttributeError):
        raise InputError(f"{path}: 'crs' is not a GeoJSON crs object with properties.name") from None
    lonlat_transform(name, path)  # an unknown CRS is an error naming the file
    return name
