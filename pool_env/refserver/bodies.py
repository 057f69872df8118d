"""Request bodies under the server's limits: bounded size, strict JSON, short validation details.

FastAPI's own body parsing accepts ``NaN``/``Infinity``/``1e999999`` (Python's ``json`` does) and
echoes the input in its 422 answer, which then cannot be serialized (500), and it reads and validates a
list of any length. The endpoints therefore read their bodies here:

1. :func:`read_json` — at most ``max_body_bytes`` (413), valid UTF-8, strict JSON (finite numbers,
   no lone surrogates, nesting at most :data:`MAX_DEPTH`) or 400;
2. :func:`list_field` — the length of a list field, checked against ``max_num_envs`` (and by the
   caller against the quota) *before* any model is built;
3. :func:`validate` — the pydantic model, or 422 with a short detail that never echoes the input.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from pool_env.refserver.records import ApiError, short

__all__ = ["MAX_DEPTH", "list_field", "read_json", "summarize_errors", "validate"]

MAX_DEPTH = 32
_MAX_ERRORS = 3

Model = TypeVar("Model", bound=BaseModel)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number (only finite numbers are accepted)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {short(text, 30)} is out of range (only finite numbers are accepted)")
    return value


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body (None when empty), read under the limits above.

    Raises:
        ApiError: 413 for a body over ``max_bytes`` (by ``Content-Length`` or while reading, so at most
            ``max_bytes`` are ever held); 400 for invalid UTF-8, invalid or non-finite JSON, a lone
            surrogate or too deep nesting.
    """
    declared = request.headers.get("content-length", "")
    too_big = ApiError(413, f"request body is larger than this server's limit of {max_bytes} bytes")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError(400, f"request body is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # JSONDecodeError, a non-finite number, an int of too many digits
        raise ApiError(400, f"request body is not valid JSON: {short(exc, 160)}") from None
    _check_tree(data)
    return data


def _check_tree(data: Any) -> None:
    """Raise ApiError 400 for nesting deeper than MAX_DEPTH or a string that is not valid Unicode."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, f"request body is nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                _check_text(key)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"request body holds a lone surrogate (invalid Unicode): {short(text, 40)}") from None


def list_field(data: Any, key: str, limit: int) -> int:
    """The length of list ``data[key]`` (0 if absent or not a list: the model reports that).

    Raises:
        ApiError: 422 when the list has more than ``limit`` entries.
    """
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        return 0
    if len(value) > limit:
        raise ApiError(422, f"{key} has {len(value)} entries; this server accepts at most {limit} (max_num_envs)")
    return len(value)


def summarize_errors(errors: list[Any]) -> str:
    """A short detail from pydantic/FastAPI validation errors: ``loc: msg`` of the first few, no input."""
    parts = []
    for error in errors[:_MAX_ERRORS]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{short(loc, 80)}: {short(error.get('msg', 'invalid'), 120)}")
    more = len(errors) - _MAX_ERRORS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate(model: type[Model], data: Any) -> Model:
    """``model`` validated from ``data``.

    Raises:
        ApiError: 422 with :func:`summarize_errors` of the validation errors.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, summarize_errors(exc.errors(include_input=False))) from None
