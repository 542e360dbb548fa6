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
    pooled = await emu.pool.refresh() if emu.pool is not None else []
    return JSONResponse(
        {
            "calls": pooled
            + [
                {"id": c.call_id, "state": c.state, "session_id": c.engine.session.id, "created": c.created}
                for c in emu.calls.values()
            ]
        }
    )


class _Drop(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    silent: bool = False


@_guarded
async def drop_call(request: Request, emu: Emulator) -> Response:
    body = await _parse(request, _Drop)
    call_id = request.path_params["call_id"]
    if emu.pool is not None:
        await emu.pool.refresh()
    if call_id not in emu.calls and not (emu.pool is not None and emu.pool.owns(call_id)):
        raise ApiError(f"Call '{call_id}' not found.", status=404, code="call_not_found")
    await emu.drop_call(call_id, silent=body.silent)
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
    emu: Emulator = request.app.state.emulator
    return JSONResponse({"status": "ok", "calls": len(emu.calls)})
