"""Usage and cost: the conversation sums what every ``response.done`` billed, and prices it by the table."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import date
from typing import Any

import pytest

from rtkit.cost import PRICES, PriceTable, Rates, Usage
from rtkit.emulator import Emulator
from rtkit.keys import IssuerKeys
from rtkit.session import RealtimeSession
from rtkit.tokens import TokenIssuer
from tests.conftest import TEST_KEY, assert_valid_server_events

#: A response.done usage as the service writes it (the SDK's RealtimeResponseUsage).
BILL = {
    "total_tokens": 1560,
    "input_tokens": 1200,
    "output_tokens": 360,
    "input_token_details": {
        "text_tokens": 200,
        "audio_tokens": 900,
        "image_tokens": 100,
        "cached_tokens": 700,
        "cached_tokens_details": {"text_tokens": 100, "audio_tokens": 550, "image_tokens": 50},
    },
    "output_token_details": {"text_tokens": 60, "audio_tokens": 300},
}


def test_usage_reads_every_count_of_response_done_and_sums() -> None:
    usage = Usage.from_api(BILL)
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (1200, 360, 1560)
    assert usage.cached_tokens == 700
    assert (usage + usage).audio_out == 600 and Usage.from_api(None) == Usage()
    assert Usage.from_api({"input_token_details": {"audio_tokens": None}}) == Usage()


def test_cost_bills_cached_input_at_its_own_rate_and_output_by_modality() -> None:
    cost = PRICES.cost(Usage.from_api(BILL), "gpt-realtime")
    # gpt-realtime: text $4 / cached $0.40 / out $16; audio $32 / cached $0.40 / out $64; image $5 / cached $0.50.
    expected = {
        "text_in": 100 * 4.00,
        "cached_text": 100 * 0.40,
        "text_out": 60 * 16.00,
        "audio_in": 350 * 32.00,
        "cached_audio": 550 * 0.40,
        "audio_out": 300 * 64.00,
        "image_in": 50 * 5.00,
        "cached_image": 50 * 0.50,
    }
    for line, per_million in expected.items():
        assert getattr(cost, line) == pytest.approx(per_million / 1e6), line
    assert cost.total == pytest.approx(sum(expected.values()) / 1e6)
    assert cost.input + cost.output == pytest.approx(cost.total)


def test_a_snapshot_is_priced_as_its_model_and_an_unknown_model_is_refused() -> None:
    assert PRICES.rates_for("gpt-realtime-2025-08-28") == PRICES.rates_for("gpt-realtime")
    assert PRICES.rates_for("gpt-realtime-2").text_out == 24.00  # not gpt-realtime's 16
    assert PRICES.rates_for("gpt-realtime-mini-2025-10-06").audio_out == 20.00
    with pytest.raises(KeyError, match="gpt-realtime-9"):
        PRICES.rates_for("gpt-realtime-9")
    assert PRICES.read_on == date(2026, 11, 30) and "developers.openai.com" in PRICES.source


def test_the_user_can_add_or_reprice_a_model() -> None:
    mine = PRICES.with_rates({"gpt-realtime-9": Rates(1, 0.1, 2, 3, 0.3, 4)})
    assert mine.cost(Usage(audio_out=1_000_000), "gpt-realtime-9").total == pytest.approx(4.0)
    assert mine.rates_for("gpt-realtime") == PRICES.rates_for("gpt-realtime")
    assert "gpt-realtime-9 by the user" in mine.source
    table = PriceTable({"gpt-realtime": Rates(0, 0, 0, 0, 0, 0)}, date(2026, 1, 1), "my contract")
    assert table.cost(Usage.from_api(BILL), "gpt-realtime").total == 0


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(api_key=TEST_KEY) as emu:
        yield emu
    assert_valid_server_events(list(emu.server_events))


@pytest.mark.espeak
async def test_a_conversations_usage_is_the_sum_of_its_responses_and_its_cost_follows_the_table(
    emulator: Emulator,
) -> None:
    """Against the emulator: a spoken reply, a text reply and a cancelled one; every response.done counts."""
    done: list[dict[str, Any]] = []
    async with TokenIssuer(TEST_KEY, base_url=emulator.base_url) as issuer:
        session = RealtimeSession(IssuerKeys(issuer), base_url=emulator.base_url, transport="websocket")
        session.events.on(lambda e: e["type"] == "response.done" and done.append(e["response"]))
        async with session:
            session.send_text("Hello there, how much does this cost?")
            await session.wait_for("response.done", timeout=20)
            session.send_text("And in text?", respond=False)
            session.create_response(output_modalities=["text"])
            await session.wait_for("response.done", timeout=20)
            cancelled = asyncio.ensure_future(session.wait_for("response.done", timeout=20))
            session.create_response()
            await session.wait_for("response.created", timeout=20)
            session.cancel_response()
            await cancelled

    conversation = session.conversation
    assert [r["status"] for r in done] == ["completed", "completed", "cancelled"]
    assert [b.response_id for b in conversation.billed] == [r["id"] for r in done]
    assert conversation.usage == sum((Usage.from_api(r["usage"]) for r in done), Usage())
    assert conversation.usage.audio_out > 0 and conversation.usage.text_out > 0
    assert conversation.cost().total == pytest.approx(PRICES.cost(conversation.usage, "gpt-realtime").total)
    assert conversation.cost(model="gpt-realtime-mini").total < conversation.cost().total
    spoken = conversation.turn_for(done[0]["output"][0]["id"])
    assert spoken is not None and spoken.usage == Usage.from_api(done[0]["usage"])
    assert conversation.billed[0].model == conversation.sessions[0].model == "gpt-realtime"


async def test_the_record_exports_as_json_and_markdown_with_function_calls_and_a_cancelled_reply(
    emulator: Emulator,
) -> None:
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    config = {"output_modalities": ["text"], "tools": [weather], "tool_choice": "auto"}
    async with TokenIssuer(TEST_KEY, base_url=emulator.base_url) as issuer:
        session = RealtimeSession(IssuerKeys(issuer), config, base_url=emulator.base_url, transport="websocket")
        async with session:
            session.send_text("What does get weather say for Paris?")
            call = (await session.wait_for("response.done", timeout=20))["response"]["output"][0]
            session.send_function_output(call["call_id"], {"temperature_c": 21})
            await session.wait_for("response.done", timeout=20)
            cancelled = asyncio.ensure_future(session.wait_for("response.done", timeout=20))
            session.send_text("Tell me more.")
            await session.wait_for("response.created", timeout=20)
            session.cancel_response()
            await cancelled

    conversation = session.conversation
    kinds = [(t.kind, t.role) for t in conversation.turns]
    assert kinds[:4] == [
        ("message", "user"),
        ("function_call", None),
        ("function_call_output", None),
        ("message", "assistant"),
    ], kinds
    record = json.loads(conversation.to_json())
    assert [t["text"] for t in record["turns"]] == [t.text for t in conversation.turns]
    assert record["usage"] == asdict(conversation.usage) and len(record["billed"]) == 3
    assert record["sessions"][0]["model"] == "gpt-realtime"
    notes = conversation.to_markdown()
    assert "**user**: What does get weather say for Paris?" in notes
    assert "**model calls** `get_weather(" in notes and '**function returns** `{"temperature_c": 21}`' in notes
    assert "3 responses:" in notes
    last = conversation.turns[-1]
    assert last.role == "assistant" and last.interrupted == (last.status == "incomplete")
