"""The classic failures, one button each, against the emulator: what happens, and what the call does.

Each scenario provokes the failure for real (the emulator's fault injection, an expired key, a missing
microphone) and reports the states and errors it observed. ``await panel.run("network_drop")`` does what
the button does and returns a ``ScenarioResult`` a notebook cell can assert on. The call may be a kernel
``RealtimeSession`` or a ``BrowserCall``: the faults are the emulator's, the reactions the call's own.
"""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass, field

import ipywidgets as widgets

from rtkit.call import LiveCall, StateChange
from rtkit.errors import RtkitError
from rtkit.keys import StaticKey
from rtkit.lab import LabBackend
from rtkit.session import RealtimeSession
from rtkit.widgets._ui import ShowsStaticCopy, StaticCopy, error_html, spawn

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


class ScenarioPanel(ShowsStaticCopy, widgets.VBox):
    def __init__(self, session: LiveCall, backend: LabBackend, *, timeout: float = 20.0) -> None:
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
        self._copy = StaticCopy(self, lambda: {"text/html": self.static_html()})

    def static_html(self) -> str:
        """The scenarios run so far, oldest first, each with its outcome: the panel where widgets do not render."""
        rows = "".join(
            f"<li style='color:{'#2e7d32' if r.recovered else '#c62828'}'>{html.escape(r.summary())}</li>"
            for r in self.results
        )
        return f"<div class='rtkit-static'><b>Scenario panel</b><ol>{rows or '<i>no scenario run yet</i>'}</ol></div>"

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

    async def _reconnected(self, result: ScenarioResult, timeout: float | None = None) -> None:
        """Wait until the call, having dropped, is connected again or has given up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
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
        """Ask for the microphone where the call takes it from: the kernel's machine, or the browser tab."""
        where = "the kernel" if isinstance(self.session, RealtimeSession) else "the browser"
        try:
            await self.session.check_microphone()
            result.notes.append(f"A microphone was found and opened in {where}: nothing to recover from here.")
            result.recovered = True
        except RtkitError as exc:
            result.error_code = exc.code
            result.notes.append(f"{exc.message} Hint: {exc.hint}")
            result.recovered = exc.code in ("microphone_unavailable", "microphone_denied")

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
        """Media blocked as a UDP-dropping firewall would. A call free to choose (``transport="auto"``) is
        dropped and falls back on its own; a call pinned to WebRTC watches a kernel probe fall back instead."""
        assert self.backend.emulator is not None
        faults = self.backend.emulator.faults
        faults.block_media = True
        try:
            if self.session.transport_choice == "auto" and self.session.state == "connected":
                await self._fall_back_in_place(result)
            else:
                await self._fall_back_in_probe(result)
        finally:
            faults.block_media = False
            await asyncio.sleep(0)

    async def _fall_back_in_place(self, result: ScenarioResult) -> None:
        assert self.backend.emulator is not None
        notices: list[str] = []
        stop = self.session.events.on(
            lambda e: (
                notices.append(str(e.get("reason") or e.get("to_transport")))
                if e["type"] == "rtkit.transport_fallback"
                else None
            )
        )
        try:
            await self.backend.emulator.drop_call()
            # WebRTC has to time out first (10 s in the browser, connect_timeout in the kernel).
            await self._reconnected(result, timeout=max(self.timeout, 45.0))
        finally:
            stop()
        transport = self.session.transport_name
        result.notes.append(
            f"The call dropped and WebRTC could not connect again; it fell back to {transport} and stays there "
            "(disconnect and connect to try WebRTC again)."
        )
        result.recovered = result.recovered and transport == "websocket" and bool(notices)

    async def _fall_back_in_probe(self, result: ScenarioResult) -> None:
        probe = RealtimeSession(
            self.backend.keys, base_url=self.backend.base_url, transport="auto", connect_timeout=2.0, reconnect=None
        )
        notices: list[str] = []
        probe.events.on(lambda e: notices.append(e["reason"]) if e["type"] == "rtkit.transport_fallback" else None)
        try:
            await probe.connect()
            transport = probe.transport_name or "?"
            result.states.extend(["connecting", "connected"])
            result.notes.append(
                f"WebRTC could not connect ({notices[0] if notices else '?'}); a new kernel session fell back to "
                f"{transport}."
            )
            result.recovered = transport == "websocket"
        except RtkitError as exc:
            result.error_code = exc.code
            result.notes.append(error_html(exc))
        finally:
            await probe.close()
