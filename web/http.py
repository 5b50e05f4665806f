"""HTTP plumbing shared by every route: JSON responses, typed errors, strict bodies, query parameters."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import bottle

from actors.errors import BadRequest, NoMajority
from actors.hub.ingest import clipped, shown

MAX_BODY = 1024 * 1024  # bytes; larger pushes get 413 (web.server caps waitress's buffering near it)
MAX_CONTROL_BODY = 16 * 1024  # a control command is a few dozen bytes


class ApiError(Exception):
    """An HTTP error with a JSON body: status code, a message saying what is wrong, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def as_json(body: Any, status: int = 200) -> str:
    """Serialise `body` as the response, strict JSON (no NaN), never cached."""
    bottle.response.status = status
    bottle.response.content_type = "application/json"
    bottle.response.set_header("Cache-Control", "no-store")
    return json.dumps(body, allow_nan=False, ensure_ascii=False)


class RawJsonBytes(bytes):
    """A body an `api` route already serialised (by as_json's rules) and encoded as UTF-8: sent as
    it is, so a megabyte body is not encoded again per request."""


class Csv(str):
    """A CSV body an `api` route returns (a download rather than JSON)."""


def error_response(exc: ApiError) -> str:
    """The JSON body and headers of an ApiError."""
    for name, value in exc.headers.items():
        bottle.response.set_header(name, value)
    if exc.status == 401:
        bottle.response.set_header("WWW-Authenticate", 'Bearer realm="harvester"')
    return as_json({"error": exc.message}, exc.status)


def api(fn: Callable[..., Any]) -> Callable[..., str]:
    """A JSON route: the return value becomes the body; ApiError and BadRequest become 4xx/5xx JSON."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        try:
            body = fn(*args, **kwargs)
            if isinstance(body, RawJsonBytes):
                bottle.response.content_type = "application/json"
                bottle.response.set_header("Cache-Control", "no-store")
                return bytes(body)  # type: ignore[return-value]  (Bottle sends bytes as they are)
            if isinstance(body, Csv):
                bottle.response.content_type = "text/csv; charset=utf-8"
                bottle.response.set_header("Cache-Control", "no-store")
                return str(body)
            return as_json(body)
        except ApiError as exc:
            return error_response(exc)
        except BadRequest as exc:
            return as_json({"error": str(exc)}, 400)
        except NoMajority as exc:  # several hubs, too few of them up: the write is not done, say why
            return as_json({"error": str(exc)}, 503)

    return wrapper


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json_body(max_bytes: int = MAX_BODY) -> Any:
    """The request body as JSON, size-limited and strict (no NaN/Infinity); ApiError otherwise.

    The declared length is refused before the body is touched: bottle.request.body reads all
    of it (into a temporary file past 100 KiB)."""
    length = bottle.request.content_length
    if length > max_bytes:
        raise ApiError(413, f"body of {length} bytes exceeds the {max_bytes}-byte limit; send at most "
                            f"{max_bytes} bytes")
    raw = bottle.request.body.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, f"body exceeds the {max_bytes}-byte limit; send at most {max_bytes} bytes")
    if not raw:
        raise ApiError(400, "empty body; expected JSON")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"body is not UTF-8: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None


def read_json_object(allowed: set[str], max_bytes: int = MAX_CONTROL_BODY) -> dict[str, Any]:
    """A JSON object body with only `allowed` keys; ApiError 400 naming what is wrong."""
    body = read_json_body(max_bytes)
    if not isinstance(body, dict):
        raise ApiError(400, f"body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s) {clipped(', '.join(unknown), 200)}; allowed: {', '.join(sorted(allowed))}")
    return body


def bearer_token() -> str | None:
    """The token from `Authorization: Bearer ...`, or None."""
    header = bottle.request.get_header("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def query_param(name: str) -> str | None:
    """A query parameter decoded as UTF-8 (None when absent); 400 when its bytes are not UTF-8.

    Bottle decodes the query string as latin-1, so `pi4%F0%9F%94%A5` would read as 'pi4ð\x9f\x94¥':
    re-encoding as latin-1 gives back the bytes the client sent."""
    raw = bottle.request.query.get(name)
    if raw is None:
        return None
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise ApiError(400, f"query parameter {name!r} is not UTF-8: {shown(raw)}; expected percent-encoded "
                            "UTF-8") from None


def float_param(name: str, default: float) -> float:
    """A finite number from the query string, or `default` when absent; 400 otherwise."""
    raw = query_param(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be a number (epoch seconds), got {shown(raw)}") from None
    if not math.isfinite(value):
        raise ApiError(400, f"query parameter {name!r} must be a finite number (epoch seconds), got {shown(raw)}")
    return value


def int_field(body: dict[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    """An integer field of a JSON body within [low, high]; 400 naming the field otherwise."""
    value = body.get(name, default)
    if value is None:
        raise ApiError(400, f"{name!r} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name!r} must be an integer in {low}..{high}, got {shown(value)}")
    return value
