"""Operator-only routes under ``/_rtkit``: inject faults, list and drop calls, list and expire keys.

They need the emulator's admin token (``X-Rtkit-Admin-Token``), which only the operator has:
in a classroom the emulator may serve the LAN, and participants must not break each other's calls.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtkit._json import JsonError, loads
from rtkit.emulator.errors import ApiError
from rtkit.emulator.faults import FaultRequest
from rtkit.emulator.hosts import call_not_found
from rtkit.emulator.routes import read_api_body
from rtkit.schema import describe_validation_error

if TYPE_CHECKING:
    from rtkit.emulator.server import Emulator

ADMIN_HEADER = "x-rtkit-admin-token"


def _guarded(handler: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        emu: Emulator = request.app.state.emulator
        given = request.headers.get(ADMIN_HEADER, "")
        if not hmac.compare_digest(given.encode(), emu.admin_token.encode()):
            return ApiError(
                "This endpoint needs the emulator's admin token in X-Rtkit-Admin-Token.",
                status=403,
                code="forbidden",
            ).response()
        try:
            return await handler(request, emu)  # type: ignore[no-any-return]
        except ApiError as err:
            return err.response()

    endpoint.__name__ = handler.__name__
    return endpoint


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    raw = await read_api_body(request, max_bytes=64 * 1024)
    try:
        return model.model_validate(loads(raw) if raw else {})
    except JsonError as exc:
        raise ApiError(f"The body is not valid JSON: {exc.reason}.", code="invalid_json") from None
    except ValidationError as exc:
        code, message, param = describe_validation_error(exc)
        raise ApiError(message, code=code, param=param) from None


@_guarded
async def faults(request: Request, emu: Emulator) -> Response:
    if request.method == "POST":
        (await _parse(request, FaultRequest)).apply(emu.faults)
    return JSONResponse(emu.faults.snapshot())


@_guarded
async def list_calls(request: Request, emu: Emulator) -> Response:
    return JSONResponse({"calls": [call.to_json() for call in await emu.switchboard.live()]})


class _Drop(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    silent: bool = False


@_guarded
async def drop_call(request: Request, emu: Emulator) -> Response:
    body = await _parse(request, _Drop)
    call_id = request.path_params["call_id"]
    if not await emu.switchboard.drop(call_id, silent=body.silent):
        raise call_not_found(call_id)
    return JSONResponse({"dropped": call_id})


class _Expire(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str | None = None


@_guarded
async def expire_keys(request: Request, emu: Emulator) -> Response:
    body = await _parse(request, _Expire)
    return JSONResponse({"expired": emu.keys.expire(body.value)})


@_guarded
async def list_keys(request: Request, emu: Emulator) -> Response:
    return JSONResponse({"keys": emu.keys.listing()})


async def health(request: Request) -> Response:
    """Liveness and the number of live calls, those the worker processes carry included."""
    emu: Emulator = request.app.state.emulator
    return JSONResponse({"status": "ok", "calls": len(await emu.switchboard.live())})
