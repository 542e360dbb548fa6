"""The public Realtime API routes: ``client_secrets``, ``calls`` and the WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

import websockets
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from rtkit._body import BODY_TIMEOUT, BodyTimeout, BodyTooLarge, read_body
from rtkit._ids import fingerprint, new_id
from rtkit._json import JsonError, loads
from rtkit.emulator import errors
from rtkit.emulator.errors import ApiError
from rtkit.emulator.hosts import Relay, session_config
from rtkit.emulator.keys import Caller, bearer
from rtkit.emulator.sessions import SessionState, validate_session
from rtkit.schema import ClientSecretRequest, describe_validation_error

if TYPE_CHECKING:
    from rtkit.emulator.server import Emulator

log = logging.getLogger("rtkit.emulator")

_BETA_CLOSE = 4000
_BETA_REASON = "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."


def _emulator(conn: Request | WebSocket) -> Emulator:
    return conn.app.state.emulator  # type: ignore[no-any-return]


def _api(handler: Any) -> Any:
    """Turn an ``ApiError`` raised anywhere in a handler into the service's JSON error response."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except ApiError as err:
            return err.response()

    endpoint.__name__ = handler.__name__
    return endpoint


#: Larger than any real request (256,000 characters of instructions, tools, an SDP offer), small enough
#: that a hostile body cannot fill the emulator's memory.
MAX_BODY_BYTES = 4 * 1024 * 1024


async def read_api_body(request: Request, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """A request body within the size and time caps, refused in the service's error shape (413, 408)."""
    try:
        return await read_body(request, max_bytes=max_bytes)
    except BodyTooLarge as exc:
        raise errors.request_too_large(exc.limit) from None
    except BodyTimeout:
        raise _too_slow() from None


def _too_slow() -> ApiError:
    return ApiError(f"The request body did not arrive within {BODY_TIMEOUT:g} s.", status=408, code="request_timeout")


def _not_json() -> ApiError:
    return ApiError(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
        "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
        "JSON.)",
        code=None,
    )


async def _json_body(request: Request) -> Any:
    raw = await read_api_body(request)
    if not raw:
        return {}
    try:
        return loads(raw)
    except JsonError:
        raise _not_json() from None


@_api
async def client_secrets(request: Request) -> Response:
    emu = _emulator(request)
    await emu.delay("client_secrets")
    emu.keys.check_main_key(bearer(request.headers.get("authorization")))
    if failure := emu.faults.take_mint_failure():
        raise failure
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ApiError("Invalid type for body: expected an object.", code="invalid_type")
    try:
        parsed = ClientSecretRequest.model_validate(body)
    except ValidationError as exc:
        code, message, param = describe_validation_error(exc, payload=body)
        raise ApiError(message, code=code, param=param) from None
    session = SessionState(
        validate_session(body["session"]) if parsed.session is not None else None,
        default_model=emu.config.default_model,
    )
    ttl = emu.faults.key_ttl_override or (parsed.expires_after.seconds if parsed.expires_after else 600)
    wire = session.to_wire()
    secret = emu.keys.mint(wire, ttl)
    if emu.faults.take_dead_on_arrival():
        emu.keys.expire(secret.value)
    wire["expires_at"] = secret.expires_at
    log.info("minted %s for %s (ttl %ss)", fingerprint(secret.value), wire["id"], ttl)
    return Response(
        json.dumps({"value": secret.value, "expires_at": secret.expires_at, "session": wire}),
        media_type="application/json",
    )


async def _read_offer(request: Request) -> tuple[str, dict[str, Any] | None]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/sdp":
        return (await read_api_body(request)).decode("utf-8", errors="replace"), None
    if ctype == "multipart/form-data":
        form = await _form(request)
        sdp = form.get("sdp")
        if sdp is None:
            raise ApiError("Missing required parameter: 'sdp'.", code="missing_required_parameter", param="sdp")
        sdp_text = sdp if isinstance(sdp, str) else (await sdp.read()).decode("utf-8", errors="replace")
        session_raw = form.get("session")
        session = None
        if session_raw is not None:
            raw = session_raw if isinstance(session_raw, str) else await session_raw.read()
            try:
                parsed = loads(raw)
            except JsonError:
                raise ApiError(
                    "Invalid value for 'session': expected a JSON object.",
                    code="invalid_value",
                    param="session",
                ) from None
            session = validate_session(parsed)
        return sdp_text, session
    raise ApiError(
        f"Unsupported content type: '{ctype or 'none'}'. Send the SDP offer as application/sdp, or as "
        "multipart/form-data with 'sdp' and 'session' fields.",
        status=415 if ctype else 400,
        code="unsupported_content_type",
    )


async def _form(request: Request) -> FormData:
    """The multipart form, read within the body's size and time limits (Starlette's own caps count parts
    and files, not bytes, and a malformed form would be its plain-text 400)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise errors.request_too_large(MAX_BODY_BYTES)
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.form(max_files=2, max_fields=8, max_part_size=MAX_BODY_BYTES)
    except TimeoutError:
        raise _too_slow() from None
    except HTTPException as exc:
        raise ApiError(f"Invalid multipart body: {exc.detail}", code="invalid_multipart") from None


def _check_sdp(sdp: str) -> None:
    if not sdp.lstrip().startswith("v=0") or "\nm=audio" not in sdp.replace("\r\n", "\n"):
        raise ApiError(
            "Invalid SDP offer: expected a session description starting with 'v=0' with an audio media "
            "section ('m=audio').",
            code="invalid_offer",
            param="sdp",
        )


def _session_for(emu: Emulator, caller: Caller, override: dict[str, Any] | None) -> SessionState:
    config = dict(caller.secret.session) if caller.secret else {"type": "realtime"}
    for key in ("id", "object", "expires_at"):
        config.pop(key, None)
    session = SessionState(config, default_model=emu.config.default_model)
    if override:
        session.update({**override, "type": session.kind})
    return session


@_api
async def create_call(request: Request) -> Response:
    emu = _emulator(request)
    await emu.delay("calls")
    caller = emu.keys.authenticate(
        bearer(request.headers.get("authorization")), opens_session=True, single_use=emu.faults.single_use_keys
    )
    emu.switchboard.admit()
    sdp, override = await _read_offer(request)
    _check_sdp(sdp)
    call_id, answer = await emu.switchboard.open(sdp, _session_for(emu, caller, override), caller)
    return Response(
        answer, status_code=201, media_type="application/sdp", headers={"Location": f"/v1/realtime/calls/{call_id}"}
    )


@_api
async def hangup_call(request: Request) -> Response:
    emu = _emulator(request)
    caller = emu.keys.authenticate(bearer(request.headers.get("authorization")))
    await emu.switchboard.hangup(request.path_params["call_id"], caller)
    return Response(status_code=200)


def _ws_key(ws: WebSocket) -> tuple[str | None, str | None]:
    """(key, subprotocol to answer). Browsers cannot set headers, so they smuggle the key in a subprotocol."""
    key = bearer(ws.headers.get("authorization"))
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    for proto in offered:
        if proto.startswith("openai-insecure-api-key."):
            key = key or proto.removeprefix("openai-insecure-api-key.")
    return key, ("realtime" if "realtime" in offered else None)


async def _deny(ws: WebSocket, err: ApiError) -> None:
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(err.response())
    else:
        await ws.close(code=1008, reason=err.message[:120])


async def realtime_websocket(ws: WebSocket) -> None:
    emu = _emulator(ws)
    key, subprotocol = _ws_key(ws)
    if ws.headers.get("openai-beta", "").startswith("realtime"):
        await ws.accept(subprotocol=subprotocol)
        await ws.close(code=_BETA_CLOSE, reason=_BETA_REASON)
        return
    try:
        await emu.delay("websocket")
        call_id = ws.query_params.get("call_id")
        # Joining a call's sideband opens no session of its own: the key already spent its use on the call.
        caller = emu.keys.authenticate(key, opens_session=not call_id, single_use=emu.faults.single_use_keys)
        emu.switchboard.admit()
        # Another session's call is answered exactly like an unknown one.
        joined = emu.switchboard.sideband(call_id, caller) if call_id else None
        session = None if joined is not None else _session_for(emu, caller, None)
        model = ws.query_params.get("model")
        transcribe = ws.query_params.get("intent") == "transcription"
        if session is not None and transcribe and caller.is_main_key:
            session = SessionState({"type": "transcription"}, default_model=emu.config.default_model)
        elif session is not None and model and caller.is_main_key:
            session = SessionState({**session_config(session), "model": model}, default_model=emu.config.default_model)
    except ApiError as err:
        await _deny(ws, err)
        return
    await ws.accept(subprotocol=subprotocol)
    if transcribe and model:
        await _refuse_after_accept(ws, _model_in_transcription())
        return
    if isinstance(joined, Relay):
        await _relay(ws, joined)
        return
    outbox: asyncio.Queue[dict[str, Any] | tuple[int, str]] = asyncio.Queue()

    def expired(reason: str) -> None:
        outbox.put_nowait((1001, reason))

    if joined is not None:
        engine = joined
    else:
        assert session is not None
        engine = emu.new_engine(session, transport="websocket", on_expired=expired)
    engine.add_listener(outbox.put_nowait)
    writer = asyncio.create_task(_write(ws, outbox))
    if joined is None:
        engine.start()
    else:
        # A joining server learns the call's current configuration; the call's own peer hears nothing of it.
        session_wire = engine.session.to_wire(engine.expires_at)
        outbox.put_nowait({"type": "session.updated", "event_id": new_id("event"), "session": session_wire})
    try:
        while not writer.done():
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is not None:
                engine.handle_text(message["text"])
            elif message.get("bytes") is not None:
                engine.handle_text(message["bytes"])
    except WebSocketDisconnect:
        pass
    finally:
        engine.remove_listener(outbox.put_nowait)
        if joined is None:
            await engine.close()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer


def _model_in_transcription() -> ApiError:
    """``?intent=transcription&model=...``: the model of a transcription session is the one in
    ``audio.input.transcription.model``; the service refuses a conversation model in the URL (its message, as
    reported with the SDK; its code and param are not on record)."""
    return ApiError("You must not provide a model parameter for transcription sessions.")


async def _refuse_after_accept(ws: WebSocket, err: ApiError) -> None:
    """A refusal the service sends as an ``error`` event on the opened socket, which then closes (1008)."""
    event = {"type": "error", "event_id": new_id("event"), "error": {**err.body(), "event_id": None}}
    await ws.send_text(json.dumps(event))
    await ws.close(code=1008, reason=err.message[:120])


async def _relay(ws: WebSocket, relay: Relay) -> None:
    """A sideband WebSocket for a call a worker process carries: the worker's own sideband, relayed both ways
    until either side closes (the call's engine lives in the worker)."""
    try:
        async with websockets.connect(relay.url, additional_headers=relay.headers) as upstream:

            async def down() -> None:
                async for message in upstream:
                    await ws.send_text(message if isinstance(message, str) else message.decode())

            async def up() -> None:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    await upstream.send(message.get("text") or message.get("bytes") or "")

            tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    except (OSError, websockets.WebSocketException):
        pass  # the worker's call ended (or the worker went away): the sideband ends with it
    with contextlib.suppress(Exception):
        await ws.close(code=1000)


async def _write(ws: WebSocket, outbox: asyncio.Queue[dict[str, Any] | tuple[int, str]]) -> None:
    while True:
        item = await outbox.get()
        if isinstance(item, tuple):
            await ws.close(code=item[0], reason=item[1])
            return
        await ws.send_text(json.dumps(item))


__all__ = ["client_secrets", "create_call", "hangup_call", "realtime_websocket"]
