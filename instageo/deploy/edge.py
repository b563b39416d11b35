"""The edge of `instarun serve`: every query string and job body is checked by a pydantic
model before a handler sees it, and every refusal has one shape, ``{"error", "field"}``
with a 4xx status (``field`` null when the request as a whole is wrong).

Bodies are bounded twice before parsing: in bytes (guards.MAX_BODY) and in nesting depth
(a 2,000-deep array made Python's JSON parser raise RecursionError). NaN and infinities are
not JSON (RFC 8259) and are refused wherever a number is read, so none reaches PROJ or is
written back into an answer.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator
from pydantic.functional_validators import BeforeValidator

from instageo.dates import iso_date

MAX_DEPTH = 4  # a job is {"bbox": [..]}: two levels; room for a client's wrapping, no more


class BadInput(Exception):
    """A request the app refuses: its message, the field it names, its status."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.field, self.status = field, status


def error_body(message: str, field: str | None = None) -> dict:
    """The one refusal shape. Messages quote what the request sent, so control characters
    (a %0A in a path) are spelt as escapes: an answer is one line, and no log is forged."""
    return {"error": "".join(c if c.isprintable() else repr(c)[1:-1] for c in message), "field": field}


def _iso_date(value):
    return value if isinstance(value, dt.date) else iso_date(value)


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]
Lon = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Lat = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]


class _Edge(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobRequest(_Edge):
    """POST /api/jobs: a model of the run over a lon/lat box on a date, read from the recipe's
    catalogue or one the server was started with (by index: the page never names a path)."""

    HINTS: ClassVar[dict] = {
        "bbox": "should be [west, south, east, north] in degrees, west < east, south < north",
        "catalog": "should be 'recipe' or the index of a catalogue serve was given (--catalog)",
        "model": "should be a model id of /api/run",
    }

    model: StrictStr = Field(max_length=200)
    bbox: tuple[Lon, Lat, Lon, Lat]
    date: IsoDate
    catalog: Literal["recipe"] | Annotated[StrictInt, Field(ge=0, le=10_000)] = "recipe"

    @model_validator(mode="after")
    def _ordered(self):
        west, south, east, north = self.bbox
        if not (west < east and south < north):
            raise ValueError(f"bbox: {self.HINTS['bbox']}")
        return self


class PointQuery(_Edge):
    """GET /api/point: a prediction's values at a lon/lat point (and the model's inputs there)."""

    HINTS: ClassVar[dict] = {"lon": "should be a number of degrees from -180 to 180",
                             "lat": "should be a number of degrees from -90 to 90"}

    lon: Lon
    lat: Lat
    prediction: str = Field("", max_length=200)
    inputs: bool = False


def parse_body(raw: bytes, model: type[BaseModel]):
    """``model`` from a JSON body, or BadInput naming the first wrong field."""
    depth = json_depth(raw)
    if depth > MAX_DEPTH:
        raise BadInput(f"the request is nested {depth} levels deep (at most {MAX_DEPTH})")
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"the request is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput("the request should be a JSON object")
    return validated(model, data)


def parse_query(params, model: type[BaseModel]):
    """``model`` from a query string (each name once), or BadInput naming the first wrong field."""
    repeated = sorted({name for name in params.keys() if len(params.getlist(name)) > 1})
    if repeated:
        raise BadInput(f"{repeated[0]}: given more than once", repeated[0])
    return validated(model, dict(params))


def validated(model: type[BaseModel], data: dict):
    """``model`` from ``data``, or BadInput with one line naming the first wrong field (its
    HINTS entry when it has one: what a right value looks like)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        message = first["msg"].removeprefix("Value error, ")
        field = str(first["loc"][0]) if first["loc"] else message.split(":")[0]
        if field not in model.model_fields and first["type"] != "extra_forbidden":
            raise BadInput(message) from None
        hints = getattr(model, "HINTS", {})
        if first["type"] == "missing" and len(first["loc"]) == 1:
            message = "missing"
        elif first["type"] == "extra_forbidden":
            message = f"not a field of the request (it takes {', '.join(model.model_fields)})"
        elif field in hints:
            message = hints[field]
        raise BadInput(message if message.startswith(f"{field}:") else f"{field}: {message}", field) from None


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings skipped), without
    parsing it: the parser recurses, this does not."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON number")
