"""``make demo``: the guide's whole architecture on one machine, offline.

The emulator plays the Realtime API; the broker is the backend that holds the main key and mints
ephemeral keys; a ``RealtimeSession`` is the client: it gets its key from the broker, opens a WebRTC
call, speaks a recorded sentence, and prints what came back with the latency of every step.
"""

from __future__ import annotations

import secrets
from typing import Any

from rtkit.audio.sinks import RecorderSink
from rtkit.audio.sources import SpeechSource
from rtkit.broker import Broker, BrokerSettings, hash_token
from rtkit.emulator import Emulator
from rtkit.keys import BrokerKeys
from rtkit.session import RealtimeSession, StateChange


def _row(label: str, value: float | None) -> str:
    return f"| {label:<44} | {'—' if value is None else f'{value:,.1f} ms':>12} |"


async def run_demo(text: str) -> None:
    app_token = secrets.token_urlsafe(16)
    async with (
        Emulator() as emu,
        Broker(
            BrokerSettings(upstream_url=emu.base_url, api_key=emu.api_key, app_tokens={"demo": hash_token(app_token)})
        ) as broker,
    ):
        print(f"emulator (the Realtime API): {emu.base_url}")
        print(f"broker (your backend):       {broker.url}/api/client-secret")
        source = SpeechSource(text, lead_seconds=0.5)
        sink = RecorderSink()
        session = RealtimeSession(
            BrokerKeys(broker.url, app_token=app_token, session_id="demo"),
            {"instructions": "Repeat what you hear."},
            base_url=emu.base_url,
            source=source,
            sink=sink,
            transport="auto",
        )

        def show(change: StateChange) -> None:
            print(f"  state: {change.state}" + (f" ({change.transport})" if change.transport else ""))

        session.states.on(show)
        async with session:
            assert session.key is not None
            print(f"  key: {session.key.fingerprint} from the broker, expires {session.key.expires_at:%H:%M:%S} UTC")
            print(f"  speaking ({source.engine}): {text!r}")
            done: dict[str, Any] = await session.wait_for("response.done", timeout=60)
            if session.transport is not None and session.transport.name == "webrtc":
                await session.wait_for("output_audio_buffer.stopped", timeout=60)
        content = done["response"]["output"][0]["content"][0]
        print(f"\nreply transcript: {content.get('transcript') or content.get('text')}")
        connect = session.metrics.connects[0]
        turn = session.metrics.turns[0]
        print(f"reply audio: {turn.reply_seconds:.2f} s\n")
        print(f"| {'step':<44} | {'time':>12} |\n|{'-' * 46}|{'-' * 13}:|")
        for label, value in [
            ("mint a key through the broker", connect.mint_ms),
            ("SDP offer → answer (POST /realtime/calls)", connect.answer_ms),
            ("→ ICE + DTLS connected", connect.connected_ms),
            ("→ data channel open", connect.channel_open_ms),
            ("→ session.created (connect total)", connect.session_created_ms),
            ("end of speech → speech_stopped (VAD)", turn.speech_stopped_ms),
            ("end of speech → response.created", turn.response_created_ms),
            ("end of speech → first audible reply audio", turn.first_audio_ms),
            ("end of speech → reply finished playing", turn.reply_end_ms),
        ]:
            print(_row(label, value))
