"""The live transcript widget, on a real call against the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("ipywidgets", reason="needs the lab extra")

from rtkit.emulator import Emulator
from rtkit.keys import IssuerKeys
from rtkit.session import RealtimeSession
from rtkit.tokens import TokenIssuer
from rtkit.widgets.transcript import Transcript
from tests.conftest import TEST_KEY


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(api_key=TEST_KEY, max_session_seconds=4) as emu:
        yield emu


async def test_the_transcript_writes_itself_in_order_across_a_resumption(emulator: Emulator) -> None:
    async with TokenIssuer(TEST_KEY, base_url=emulator.base_url) as issuer:
        session = RealtimeSession(
            IssuerKeys(issuer), {"output_modalities": ["text"]}, base_url=emulator.base_url, transport="websocket"
        )
        view = Transcript(session)
        assert "No conversation yet" in view.value
        async with session:
            session.send_text("My name is <Ada>.")
            await session.wait_for("response.done", timeout=20)
            await asyncio.sleep(0.3)  # one redraw after the burst of events
            first = view.value
            assert "you</b>: My name is &lt;Ada&gt;." in first and "model</b>: My name is &lt;Ada&gt;." in first
            await session.conversation.next_resumption(timeout=20)  # the 4 s cap: a new session, turns restored
            await session.wait_for_state("connected", timeout=20)
            session.send_text("What is my name?")
            await session.wait_for("response.done", timeout=20)
            await asyncio.sleep(0.3)
        later = view.value
    assert later.index("My name is") < later.index("session_expired: a new session, 2 items restored")
    assert later.index("session_expired") < later.index("What is my name?")
    assert f"{len(session.conversation.billed)} responses" in later and "$" in later
    bundle = view._repr_mimebundle_()
    assert bundle["text/html"] == later and "application/vnd.jupyter.widget-view+json" in bundle
    view.close()
