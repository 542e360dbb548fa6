"""What a live call is, whichever side holds the audio.

rtkit makes a Realtime call from two places: the kernel itself (``RealtimeSession``: aiortc or a
WebSocket, audio from a source into a sink) or the notebook's browser tab (``rtkit.widgets.BrowserCall``:
the page's microphone and speaker, the kernel as its backend). Plots, panels, scenarios and lessons are
written once, against ``LiveCall``; ``CallCore`` holds what both implementations share: the states and
their reconnection policy, the one connect path (a key, one fresh key after a refusal, the config, the earlier
turns), the transport, the event stream and its errors, waiting for events, and the client events.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import random
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from rtkit._ids import fingerprint
from rtkit.audio.meter import Level, LevelMeter
from rtkit.conversation import Conversation
from rtkit.cost import PRICES, PriceTable
from rtkit.errors import (
    AudioUnavailableError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    NetworkLostError,
    QuotaExceededError,
    RealtimeAPIError,
    RtkitError,
    TokenExpiredError,
    retry_wait,
)
from rtkit.events import Broadcast, EventWaiters, next_value
from rtkit.keys import KeyProvider, RefusableKeyProvider, as_provider
from rtkit.metrics import BargeIn, ConnectRecord, ErrorRecord, SessionMetrics
from rtkit.resume import ResumePolicy, Resumer
from rtkit.tokens import EphemeralKey

if TYPE_CHECKING:  # the transports package loads aiortc: a browser call has no need of it
    from rtkit.report import SessionReport
    from rtkit.transports.base import Transport

__all__ = ["CallCore", "ConnectionState", "LiveCall", "ReconnectPolicy", "StateChange", "TransportChoice"]

ConnectionState = Literal["connecting", "connected", "disconnected", "failed"]
TransportChoice = Literal["webrtc", "websocket", "auto"]

#: Failures another attempt with a fresh key will not cure: reconnecting stops at once.
HOPELESS = (AuthenticationError, AudioUnavailableError, QuotaExceededError, ConfigurationError)


@dataclass(frozen=True)
class StateChange:
    """One transition; ``attempt`` is 0 for the first connection and counts reconnections after it."""

    state: ConnectionState
    previous: ConnectionState
    attempt: int = 0
    reason: str | None = None
    error: RtkitError | None = None
    transport: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ReconnectPolicy:
    """How hard to try after a live connection drops: exponential backoff with jitter, bounded."""

    max_attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 8.0
    #: Each delay is scaled by a random factor in [1 - jitter, 1 + jitter], so a classroom of clients
    #: that lost the network together does not come back in lockstep.
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.initial_delay * 2.0 ** (attempt - 1))
        return max(0.0, base * random.uniform(1 - self.jitter, 1 + self.jitter))


class LiveCall(Protocol):
    """What plots, panels, scenarios and lesson code may rely on, whether the call runs in the kernel
    (``RealtimeSession``) or in the notebook's browser tab (``BrowserCall``)."""

    states: Broadcast[StateChange]
    events: Broadcast[dict[str, Any]]
    errors: Broadcast[RealtimeAPIError]
    input_meter: LevelMeter
    output_meter: LevelMeter
    metrics: SessionMetrics
    conversation: Conversation
    key: EphemeralKey | None
    base_url: str
    transport_choice: TransportChoice

    @property
    def state(self) -> ConnectionState: ...

    @property
    def transport_name(self) -> str | None: ...

    @property
    def levels(self) -> Broadcast[Level]: ...

    @property
    def output_levels(self) -> Broadcast[Level]: ...

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def close(self) -> None: ...

    def send(self, event: dict[str, Any]) -> None: ...

    def update_session(self, **fields: Any) -> None: ...

    def send_text(self, text: str, *, respond: bool = True) -> None: ...

    def send_function_output(self, call_id: str, output: Any, *, respond: bool = True) -> None: ...

    def create_response(self, **params: Any) -> None: ...

    def cancel_response(self) -> None: ...

    def report(self, prices: PriceTable = PRICES) -> SessionReport: ...

    async def check_microphone(self) -> None: ...

    async def wait_for(self, event_type: str, timeout: float = 30.0) -> dict[str, Any]: ...

    async def wait_for_state(self, *states: ConnectionState, timeout: float = 30.0) -> StateChange: ...


class CallCore(ABC):
    """The part of a call that does not care where the audio is. A subclass says how a transport is opened with
    a key (``_open_transport``: the kernel's WebRTC or WebSocket, or the call the page makes) and how to check
    the microphone; connecting, reconnecting, hanging up and everything observable go through here."""

    #: The name used in log lines ("session", "browser call").
    _log_name = "call"
    #: What the docs call the object, for hints ("await session.connect() first").
    _var_name = "call"
    _logger = logging.getLogger("rtkit.call")

    def __init__(
        self,
        keys: KeyProvider | str,
        config: BaseModel | dict[str, Any] | None = None,
        *,
        transport: TransportChoice = "auto",
        reconnect: ReconnectPolicy | None = None,
        connect_timeout: float = 10.0,
        resume: ResumePolicy | None = None,
    ) -> None:
        if transport not in ("webrtc", "websocket", "auto"):
            raise ConfigurationError(f"Unknown transport {transport!r}.", hint="use 'webrtc', 'websocket' or 'auto'")
        self._keys = as_provider(keys)
        self.config = config.model_dump(exclude_none=True, mode="json") if isinstance(config, BaseModel) else config
        self.transport_choice: TransportChoice = transport
        self.reconnect_policy = reconnect if reconnect is not None else ReconnectPolicy()
        self.connect_timeout = connect_timeout
        self.states: Broadcast[StateChange] = Broadcast()
        self.events: Broadcast[dict[str, Any]] = Broadcast(maxsize=5000)
        self.errors: Broadcast[RealtimeAPIError] = Broadcast()
        self.input_meter = LevelMeter("input")
        self.output_meter = LevelMeter("output")
        self.metrics = SessionMetrics()
        self.errors.on(
            lambda e: self.metrics.api_error(
                ErrorRecord(code=e.api_code, type=e.api_type, message=e.message, param=e.param, event_id=e.event_id)
            )
        )
        #: One logical conversation across the physical sessions (``rtkit.resume`` carries it from one to the next).
        self.conversation = Conversation()
        self.resume_policy = resume if resume is not None else ResumePolicy()
        self._resumer = Resumer(self, self.resume_policy, self.conversation)
        #: The last key used (its ``repr`` shows only a fingerprint); ``None`` for a plain string key.
        self.key: EphemeralKey | None = None
        #: The connection in use (the last one opened); ``transport_name`` says over what.
        self.transport: Transport | None = None
        self._state: ConnectionState = "disconnected"
        self._closing = False
        self._waiters = EventWaiters()
        self._reconnect_task: asyncio.Task[None] | None = None

    # -- observable state -------------------------------------------------------------------
    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def transport_name(self) -> str | None:
        """``"webrtc"`` or ``"websocket"`` once connected (the one really used, after any fallback)."""
        return self.transport.name if self.transport is not None else None

    @property
    def levels(self) -> Broadcast[Level]:
        """Input (microphone) levels; ``output_levels`` for the model's voice."""
        return self.input_meter.levels

    @property
    def output_levels(self) -> Broadcast[Level]:
        return self.output_meter.levels

    def _set_state(
        self, state: ConnectionState, *, attempt: int = 0, reason: str | None = None, error: RtkitError | None = None
    ) -> None:
        previous, self._state = self._state, state
        change = StateChange(state, previous, attempt, reason, error, self.transport_name)
        self._logger.info("%s %s → %s%s", self._log_name, previous, state, f" ({reason})" if reason else "")
        self._state_changed(change)
        self.states.publish(change)

    def _state_changed(self, change: StateChange) -> None:  # noqa: B027 (an optional hook)
        """For subclasses that show the state somewhere before subscribers hear of it."""

    # -- connecting -------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect (or raise a typed error, leaving the state ``failed``). Asked while reconnecting, it stops
        the reconnection and starts over now."""
        if self._state == "connected":
            return
        self._closing = False
        await self._stop_reconnecting()
        try:
            await self._prepare()
            await self._establish(attempt=0)
        except RtkitError as exc:
            self._set_state("failed", reason=str(exc), error=exc)
            raise

    async def _prepare(self) -> None:  # noqa: B027 (an optional hook)
        """What a first connection needs besides the call itself (the kernel's audio devices, say)."""

    async def disconnect(self) -> None:
        """Hang up and stop reconnecting; the state becomes ``disconnected``. ``connect()`` may follow."""
        self._closing = True
        await self._stop_reconnecting()
        if self.transport is not None:
            await self.transport.close()
        if self._state != "disconnected":
            self._set_state("disconnected", reason="closed")
        await self._hung_up()

    async def _hung_up(self) -> None:  # noqa: B027 (an optional hook)
        """What a hang-up releases besides the transport (the kernel's audio devices, the page's microphone)."""

    async def close(self) -> None:
        """``disconnect()``, and let go of whatever else the call holds (the browser call's widget)."""
        await self.disconnect()

    @abstractmethod
    async def check_microphone(self) -> None:
        """Open and close the microphone the call would use: raises ``MicrophoneUnavailableError`` (or
        ``MicrophoneDeniedError``) with a hint when there is none or it may not be used."""

    async def _establish(self, attempt: int) -> None:
        """One attempt: a key, a transport opened with it (one fresh key if the API refuses it), the session's
        config, the earlier turns; only then ``connected``. Records the attempt either way."""
        self._set_state("connecting", attempt=attempt)
        record = ConnectRecord(attempt=attempt + 1)
        started = time.perf_counter()
        try:
            await self._before_open()
            created = self._expect("session.created")
            await self._open_with_one_fresh_key(record)
            await asyncio.wait_for(created, self.connect_timeout)
            record.session_created_ms = round((time.perf_counter() - started) * 1000, 2)
            if self.config:
                await self._apply_config()
            await self._restore_conversation(attempt)
        except TimeoutError:
            error = NetworkLostError("The Realtime API did not start the session in time.")
            self._record_failure(record, started, error)
            raise error from None
        except RtkitError as exc:
            self._record_failure(record, started, exc)
            raise
        self._record_success(record, started, attempt)

    async def _before_open(self) -> None:  # noqa: B027 (an optional hook)
        """What each attempt waits for before a key is minted (the browser call: a page showing it)."""

    @abstractmethod
    async def _open_transport(self, key: str, record: ConnectRecord) -> None:
        """Open ``self.transport`` with ``key``: raise ``AuthenticationError`` when the API refuses the key, the
        matching ``RtkitError`` for anything else."""

    async def _open_with_one_fresh_key(self, record: ConnectRecord) -> None:
        """The one place a refused key is met, for both calls: it earns one fresh key, not a loop (a provider
        that hands back the same dead key, or a fresh key refused too, is a real failure)."""
        key = await self._mint(record)
        try:
            await self._open_transport(key, record)
        except AuthenticationError as first:
            fresh = await self._mint_after_refusal(record, key, first)
        else:
            self._record_transport(record)
            return
        try:
            await self._open_transport(fresh, record)
        except AuthenticationError as second:
            raise self._refused_again(second) from second
        self._record_transport(record)

    def _record_transport(self, record: ConnectRecord) -> None:
        transport = self.transport
        assert transport is not None
        timings = transport.timings
        record.transport = transport.name
        record.offer_ms, record.answer_ms = timings.offer_ms, timings.answer_ms
        record.connected_ms, record.channel_open_ms = timings.connected_ms, timings.channel_open_ms

    async def _stop_reconnecting(self) -> None:
        task = self._reconnect_task
        if task and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _mint(self, record: ConnectRecord) -> str:
        started = time.perf_counter()
        key = await self._keys()
        record.mint_ms = round((time.perf_counter() - started) * 1000, 2)
        self.key = key if isinstance(key, EphemeralKey) else None
        return key.value if isinstance(key, EphemeralKey) else key

    async def _mint_after_refusal(self, record: ConnectRecord, refused: str, error: AuthenticationError) -> str:
        """The API refused ``refused`` (401). A key that was valid may still be served by a cache after the API
        restarted or revoked it, so a provider that caches is told, once, and one fresh key is asked for. The
        same key again is a real failure, raised as the refusal it was."""
        if isinstance(self._keys, RefusableKeyProvider):
            self._keys.refused(refused)
        # Recovered or not, a refused key is worth seeing: in the attempt's record and on the event stream.
        record.refused_key = fingerprint(refused)
        self._notice("rtkit.key_refused", key=record.refused_key, reason=error.message, attempt=record.attempt)
        fresh = await self._mint(record)
        if fresh == refused:
            kind = TokenExpiredError if isinstance(error, TokenExpiredError) else AuthenticationError
            raise kind(
                f"The key provider returned the same refused key again ({error.message}).",
                hint="a fixed key cannot reconnect after it expires; use a broker or an issuer",
            ) from error
        return fresh

    @staticmethod
    def _refused_again(error: AuthenticationError) -> TokenExpiredError:
        """The fresh key was refused too: another one would not fare better."""
        return TokenExpiredError(
            f"The Realtime API refused a freshly minted key too: {error.message}",
            hint="check that the key provider mints for the API at base_url",
        )

    def _record_failure(self, record: ConnectRecord, started: float, exc: RtkitError) -> None:
        self._cancel_waiters()
        record.total_ms = round((time.perf_counter() - started) * 1000, 2)
        record.error = exc.code
        self.metrics.connected(record)

    def _record_success(self, record: ConnectRecord, started: float, attempt: int) -> None:
        record.total_ms = round((time.perf_counter() - started) * 1000, 2)
        record.ok = True
        self.metrics.connected(record)
        self._set_state("connected", attempt=attempt)

    async def _apply_config(self) -> None:
        """Send the call's config and wait until the API takes it (or says why not)."""
        assert self.config is not None
        updated, failed = self._expect("session.updated"), self._expect("error")
        self.send(
            {
                "type": "session.update",
                "event_id": "rtkit_session_config",
                "session": {"type": "realtime", **self.config},
            }
        )
        done, _ = await asyncio.wait(
            {updated, failed}, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for future in (updated, failed):
            if future not in done:
                future.cancel()
        if failed in done:
            err = failed.result()["error"]
            raise InvalidRequestError(
                f"The session config was refused: {err.get('message')}",
                hint=f"check {err.get('param')}" if err.get("param") else None,
            )
        if not done:
            raise NetworkLostError("The Realtime API did not confirm the session config in time.")

    async def _restore_conversation(self, attempt: int) -> None:
        """Re-create the earlier turns in the session just opened, before it counts as connected."""
        await self._resumer.restore(attempt)

    # -- losing the connection, and getting it back -------------------------------------------
    def _lost(self, error: RtkitError | None, reason: str) -> None:
        """A live connection dropped: say so, then reconnect in the background (or fail, if not allowed)."""
        self._cancel_waiters()
        self._set_state("disconnected", reason=reason, error=error)
        if self.reconnect_policy.max_attempts > 0:
            self._reconnect_task = asyncio.ensure_future(self._reconnect(error))
        else:
            self._set_state("failed", reason=reason, error=error)

    def _resume_now(self, reason: str) -> None:
        """A planned move to a fresh session, between turns, ahead of the cap: a reconnection without the wait,
        and without waking anyone waiting for an event (the next session will answer them)."""
        self._set_state("disconnected", reason=reason)
        self._reconnect_task = asyncio.ensure_future(self._reconnect(None, planned=True))

    async def _before_attempt(self) -> None:
        """Close what the previous attempt left behind."""
        if self.transport is not None:
            await self.transport.close()

    async def _reconnect(self, cause: RtkitError | None, *, planned: bool = False) -> None:
        """A fresh key per attempt (the old one may be what failed), exponential backoff with jitter, and the
        server's ``Retry-After`` waited exactly when it gave one (``retry_wait``). A failure no retry can cure ends
        it at once."""
        last: RtkitError | None = cause
        policy = self.reconnect_policy
        for attempt in range(1, policy.max_attempts + 1):
            wait = retry_wait(last, 0.0 if planned and attempt == 1 else policy.delay(attempt))
            await asyncio.sleep(wait)
            if self._closing:
                return
            await self._before_attempt()
            try:
                await self._establish(attempt)
                return
            except HOPELESS as exc:
                self._set_state("failed", attempt=attempt, reason=str(exc), error=exc)
                return
            except RtkitError as exc:
                last = exc
                self._set_state("disconnected", attempt=attempt, reason=exc.message, error=exc)
        error = NetworkLostError(
            f"Unable to reconnect after {policy.max_attempts} attempts: {last}",
            hint="check the network and the Realtime API status, then connect again",
        )
        self._set_state("failed", attempt=policy.max_attempts, reason=str(error), error=error)

    # -- server events --------------------------------------------------------------------
    def _receive(self, event: dict[str, Any], *, measure: bool = True) -> None:
        """One server event: into the metrics (unless the subclass feeds them itself, later), to whoever waits
        for it, as an error if it is one, and out to every subscriber."""
        if measure:
            self.metrics.server_event(event, time.perf_counter())
        kind = event.get("type", "")
        self._resumer.observe(event)
        self._waiters.resolve(event)
        if kind == "error":
            err = event.get("error") or {}
            self.errors.publish(
                RealtimeAPIError(
                    err.get("message", "error"),
                    api_code=err.get("code"),
                    api_type=err.get("type"),
                    param=err.get("param"),
                    event_id=err.get("event_id"),
                )
            )
        elif kind == "response.done" and event.get("response", {}).get("status") == "failed":
            err = (event["response"].get("status_details") or {}).get("error") or {}
            self.errors.publish(
                RealtimeAPIError(
                    err.get("message", "The response failed."), api_code=err.get("code"), api_type=err.get("type")
                )
            )
        self.events.publish(event)

    def _notice(self, kind: str, **fields: Any) -> None:
        """An event of rtkit's own (``rtkit.*``) on the same stream as the server's."""
        self.events.publish({"type": kind, **fields})

    def _barged_in(self, record: BargeIn) -> None:
        """The user spoke over a reply and the client stopped it: into the metrics, and out as ``rtkit.barge_in``."""
        self.metrics.barge_in(record)
        self._notice("rtkit.barge_in", **{k: v for k, v in asdict(record).items() if k != "kind"})

    # -- waiting --------------------------------------------------------------------------
    def _expect(self, kind: str) -> asyncio.Future[dict[str, Any]]:
        return self._waiters.expect(kind)

    def _cancel_waiters(self) -> None:
        self._waiters.cancel_all()

    async def wait_for(self, event_type: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next server event of this type."""
        return await asyncio.wait_for(self._expect(event_type), timeout)

    async def wait_for_state(self, *states: ConnectionState, timeout: float = 30.0) -> StateChange:
        """The next transition into one of ``states``."""
        return await next_value(self.states, lambda change: change.state in states, timeout)

    # -- client events --------------------------------------------------------------------
    def send(self, event: dict[str, Any]) -> None:
        """Send one client event as is."""
        if self.transport is None or self._state not in ("connected", "connecting"):
            raise NetworkLostError(
                f"The {self._var_name} is not connected.", hint=f"await {self._var_name}.connect() first"
            )
        self.transport.send(event)

    def update_session(self, **fields: Any) -> None:
        """Change the session config now, and on every reconnection after."""
        self.config = {**copy.deepcopy(self.config or {}), **fields}
        self.send({"type": "session.update", "session": {"type": "realtime", **fields}})

    def send_text(self, text: str, *, respond: bool = True) -> None:
        """Add a user message; ``respond`` asks for an answer right away."""
        self.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
            }
        )
        if respond:
            self.create_response()

    def send_function_output(self, call_id: str, output: Any, *, respond: bool = True) -> None:
        """Answer the model's function call (``response.function_call_arguments.done`` names ``call_id``):
        ``output`` goes back JSON-encoded unless it is already a string; ``respond`` asks for the reply."""
        text = output if isinstance(output, str) else json.dumps(output)
        self.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": text},
            }
        )
        if respond:
            self.create_response()

    def create_response(self, **params: Any) -> None:
        self.send({"type": "response.create", **({"response": params} if params else {})})

    def cancel_response(self) -> None:
        self.send({"type": "response.cancel"})

    def report(self, prices: PriceTable = PRICES) -> SessionReport:
        """What happened and what it cost, as of now: connections, reply latency, turns, errors, tokens, dollars
        (``SessionReport``: shows as HTML in a notebook, ``.save(path)`` writes JSON)."""
        from rtkit.report import SessionReport

        return SessionReport.of(self, prices)
