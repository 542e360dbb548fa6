"""``make demo``: one complete spoken turn against a local emulator, with its timeline.

The main key stays here (the "backend"); the call is opened with an ephemeral key, as a browser would.
"""

from __future__ import annotations

import time

import httpx
import numpy as np

from rtkit.audio.pcm import REALTIME_RATE, level_dbfs
from rtkit.emulator import Emulator
from rtkit.emulator.probe import open_call
from rtkit.emulator.responders import voice_text

LEAD_SECONDS = 0.5


async def run_demo(text: str) -> None:
    speech = await voice_text(text)
    async with Emulator() as emu:
        print(f"emulator: {emu.base_url}")
        async with httpx.AsyncClient() as http:
            t = time.perf_counter()
            r = await http.post(
                f"{emu.base_url}/realtime/client_secrets",
                headers={"Authorization": f"Bearer {emu.api_key}"},
                json={"session": {"type": "realtime", "model": "gpt-realtime"}},
            )
            r.raise_for_status()
            mint_ms = (time.perf_counter() - t) * 1000
        key = r.json()["value"]
        print(f"minted an ephemeral key ek_…{key[-4:]} in {mint_ms:.1f} ms")
        call = await open_call(emu.base_url, key, audio=speech, lead_seconds=LEAD_SECONDS)
        print(f"call {call.call_id}: data channel open after {call.timings['channel_open'] * 1000:.0f} ms")
        print(f"speaking {speech.size / REALTIME_RATE:.2f} s: {text!r}")
        await call.wait_for("output_audio_buffer.stopped", timeout=30 + speech.size / REALTIME_RATE * 2)
        assert call.track is not None
        # The speech's last frame left the microphone track at this clock time.
        speech_end = call.track.sent_at[0] + LEAD_SECONDS + speech.size / REALTIME_RATE
        print("\n  t (ms after end of speech)  event")
        for at, event in call.events:
            print(f"  {(at - speech_end) * 1000:>8.0f}                    {event['type']}")
        voiced = [at for at, pcm in call.frames if level_dbfs(pcm)[0] > -40 and at > speech_end - 5]
        first_audio = next((at for at in voiced if at > speech_end), None)
        done = next(e for _, e in call.events if e["type"] == "response.done")
        reply = np.concatenate([pcm for at, pcm in call.frames if at > speech_end])
        print(f"\nreply transcript: {done['response']['output'][0]['content'][0]['transcript']}")
        print(f"reply audio received: {reply.size / REALTIME_RATE:.2f} s, peak {level_dbfs(reply)[1]:.1f} dBFS")
        if first_audio is not None:
            print(
                f"time to first audio (end of speech → first reply frame): "
                f"{(first_audio - speech_end) * 1000:.0f} ms  (includes the VAD's 500 ms silence window)"
            )
        await call.close()
