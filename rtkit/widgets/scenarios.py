"""The classic failures, one button each, against the emulator: what happens, and what the session does.

Each scenario provokes the failure for real (the emulator's fault injection, an expired key, a missing
microphone) and reports the states and errors it observed. ``await panel.run("network_drop")`` does what
the button does and returns a ``ScenarioResult`` a notebook cell can assert on.
"""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass, field

import ipywidgets as widgets

from rtkit.errors import RtkitError
from rtkit.keys import StaticKey
from rtkit.lab import LabBackend
from rtkit.session import RealtimeSession, StateChange
from rtkit.widgets._ui import error_html, spawn

SCENARIOS = {
    "expire_key": "Key expires",
    "mic_denied": "No / denied microphone",
    "network_drop": "Network drops mid-call",
    "upstream_429": "API rate limits (429)",
    "upstream_500": "API fails (500)",
    "webrtc_unavailable": "WebRTC blocked → WebSocket",
}


@dataclass
class ScenarioResult:
    name: str
    states: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error_code: str | None = None
    recovered: bool = False

    def summary(self) -> str:
        outcome = "recovered" if self.recovered else "did not recover"
        states = " → ".join(self.states) or "(no state change)"
        return f"{SCENARIOS[self.name]}: {outcome}. States: {states}." + "".join(f" {n}" for n in self.notes)


class ScenarioPanel(widgets.VBox):
    def __init__(self, session: RealtimeSession, backend: LabBackend, *, timeout: float = 20.0) -> None:
        self.session = session
        self.backend = backend
        self.timeout = timeout
        self.results: list[ScenarioResult] = []
        self._out = widgets.HTML("")
        buttons = []
        for name, title in SCENARIOS.items():
            button = widgets.Button(description=title, layout=widgets.Layout(width="220px"))
            button.on_click(lambda _, n=name: spawn(self.run(n), self._out))
            button.disabled = backend.emulator is None
            buttons.append(button)
        note = widgets.HTML(
            ""
            if backend.emulator
            else "<i>Scenarios need the local emulator (they inject faults "
            "into it); they are off against the real API.</i>"
        )
        super().__init__(
            [widgets.GridBox(buttons, layout=widgets.Layout(grid_template_columns="repeat(3, 230px)")), note, self._out]
        )

    async def run(self, name: str) -> ScenarioResult:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
        if self.backend.emulator is None:
            raise RuntimeError("scenarios need the emulator")
        self._out.value = f"running <b>{html.escape(SCENARIOS[name])}</b>…"
        result = ScenarioResult(name)
        self._changes: list[StateChange] = []

        def seen(change: StateChange) -> None:
            self._changes.append(change)
            result.states.append(change.state)

        unsubscribe = self.session.states.on(seen)
        try:
            await getattr(self, f"_{name}")(result)
        finally:
            unsubscribe()
        self.results.append(result)
        colour = "#2e7d32" if result.recovered else "#c62828"
        self._out.value = f"<span style='color:{colour}'>{html.escape(result.summary())}</span>"
        return result

    async def _reconnected(self, result: ScenarioResult) -> None:
        """Wait until the session, having dropped, is connected again or has given up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while loop.time() < deadline:
            if "disconnected" in result.states and result.states[-1] in ("connected", "failed"):
                break
            await asyncio.sleep(0.05)
        result.recovered = result.states[-1:] == ["connected"]
        error = next((c.error for c in reversed(self._changes) if c.error is not None), None)
        if error is not None:
            result.error_code = error.code

    def _need_connected(self) -> None:
        if self.session.state != "connected":
            raise RuntimeError("connect the session first")

    async def _expire_key(self, result: ScenarioResult) -> None:
        self._need_connected()
        assert self.backend.emulator is not None and self.session.key is not None
        old = self.session.key
        self.backend.emulator.keys.expire(old.value)
        result.notes.append(f"Key {old.fingerprint} expired; the live session is still {self.session.state}.")
        probe = RealtimeSession(
            StaticKey(old.value),
            base_url=self.backend.base_url,
            transport=self.session.transport_choice,
            reconnect=None,
        )
        try:
            await probe.connect()
        except RtkitError as exc:
            result.error_code = exc.code
            result.notes.append(f"A new connection with that key is refused: {exc.code}.")
        finally:
            await probe.close()
        result.recovered = self.session.state == "connected" and result.error_code == "token_expired"

    async def _mic_denied(self, result: ScenarioResult) -> None:
        from rtkit.audio.sources import MicrophoneSource

        probe = RealtimeSession(self.backend.keys, base_url=self.backend.base_url, source=MicrophoneSource())
        try:
            await probe.connect()
            result.notes.append("A microphone was found and opened: nothing to recover from here.")
            result.recovered = True
        except RtkitError as exc:
            result.error_code = exc.code
            result.notes.append(f"{exc.message} Hint: {exc.hint}")
            result.recovered = exc.code in ("microphone_unavailable", "microphone_denied")
        finally:
            await probe.close()

    async def _network_drop(self, result: ScenarioResult) -> None:
        self._need_connected()
        assert self.backend.emulator is not None
        await self.backend.emulator.drop_call()
        await self._reconnected(result)

    async def _upstream(self, result: ScenarioResult, status: int) -> None:
        self._need_connected()
        assert self.backend.emulator is not None
        issued = self.backend.emulator.keys.issued
        self.backend.emulator.faults.fail_next_mints(2, status=status, retry_after=0.5)
        await self.backend.emulator.drop_call()
        await self._reconnected(result)
        result.notes.append(
            f"The next 2 mints failed with {status}; the issuer retried "
            f"({self.backend.issuer.last_attempts} attempts for the last key), "
            f"{self.backend.emulator.keys.issued - issued} new key minted."
        )

    async def _upstream_429(self, result: ScenarioResult) -> None:
        await self._upstream(result, 429)

    async def _upstream_500(self, result: ScenarioResult) -> None:
        await self._upstream(result, 500)

    async def _webrtc_unavailable(self, result: ScenarioResult) -> None:
        assert self.backend.emulator is not None
        faults = self.backend.emulator.faults
        faults.block_media = True
        probe = RealtimeSession(
            self.backend.keys, base_url=self.backend.base_url, transport="auto", connect_timeout=2.0, reconnect=None
        )
        notices: list[str] = []
        probe.events.on(lambda e: notices.append(e["reason"]) if e["type"] == "rtkit.transport_fallback" else None)
        try:
            await probe.connect()
            transport = probe.transport.name if probe.transport else "?"
            result.states.extend(["connecting", "connected"])
            result.notes.append(
                f"WebRTC could not connect ({notices[0] if notices else '?'}); the session fell back to {transport}."
            )
            result.recovered = transport == "websocket"
        except RtkitError as exc:
            result.error_code = exc.code
            result.notes.append(error_html(exc))
        finally:
            faults.block_media = False
            await probe.close()
            await asyncio.sleep(0)
