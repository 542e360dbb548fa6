"""Client input checked against ``rtkit.schema``'s shapes, and refused the way the service refuses it.

One problem at a time, as an ``ApiError`` naming the parameter by its path from ``root`` (``session``,
``response``, ``item``); what passes comes back as JSON with only the fields the client set.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from rtkit.emulator.errors import ApiError
from rtkit.schema import ResponseCreateParams, describe_validation_error, json_type

__all__ = ["validate_response", "validated"]

_response_adapter: TypeAdapter[Any] = TypeAdapter(ResponseCreateParams)


def validated(adapter: TypeAdapter[Any], payload: Any, root: str) -> dict[str, Any]:
    """``payload`` as one of the schema's shapes; the first problem raised as the service reports it."""
    if not isinstance(payload, dict):
        raise ApiError(
            f"Invalid type for '{root}': expected an object, but got {json_type(payload)} instead.",
            code="invalid_type",
            param=root,
        )
    try:
        model = adapter.validate_python(payload)
    except ValidationError as exc:
        code, message, param = describe_validation_error(exc, root, payload)
        raise ApiError(message, code=code, param=param) from None
    return dict(adapter.dump_python(model, exclude_unset=True, mode="json"))


def validate_response(payload: Any) -> dict[str, Any]:
    """``response.create``'s ``response`` (``ResponseCreateParams``)."""
    return validated(_response_adapter, payload, "response")
