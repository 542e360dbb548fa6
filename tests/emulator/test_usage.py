"""The emulator's usage is plausible: audio tokens in proportion to the audio, the whole conversation read by
every response, and the part the previous response read billed as cached once it is long enough."""

from __future__ import annotations

import pytest

from rtkit.audio.pcm import tone
from rtkit.emulator.usage import CACHE_MIN_TOKENS, CACHE_STEP_TOKENS, InputBlock, count_input
from tests.emulator.wire import Conn, append, shared_conn, shared_emulator, text_item

#: The session tests share the module's emulator, so they run in the module's event loop.
IN_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

emulator = shared_emulator()
conn = shared_conn()


def test_only_a_shared_prefix_of_1024_tokens_or_more_is_cached_in_steps_of_128() -> None:
    head = [InputBlock("instructions", 600), InputBlock("item_1", 300, 200)]
    alone = count_input(head, [])
    assert alone == count_input(head, head[:1]) and alone.cached_text == alone.cached_audio == 0  # 600 < 1,024
    grown = [*head, InputBlock("item_2", 50)]
    read = count_input(grown, head)  # 1,100 tokens shared: 1,024 cached, text first
    assert (read.text, read.audio) == (950, 200)
    assert (read.cached_text, read.cached_audio) == (900, 1024 - 900)
    changed = [head[0], InputBlock("item_1 truncated", 300, 100), grown[2]]
    assert count_input(changed, grown).cached_text == 0  # 600 shared: under the minimum
    assert CACHE_MIN_TOKENS == 1024 and CACHE_STEP_TOKENS == 128


async def reply_usage(conn: Conn, **response: object) -> dict[str, int]:
    await conn.send({"type": "response.create", "response": {"output_modalities": ["text"], **response}})
    done = await conn.until("response.done", timeout=20)
    details = done["response"]["usage"]["input_token_details"]
    return {
        "text": details["text_tokens"],
        "audio": details["audio_tokens"],
        "cached": details["cached_tokens"],
        "cached_text": details["cached_tokens_details"]["text_tokens"],
        "cached_audio": details["cached_tokens_details"]["audio_tokens"],
    }


@IN_MODULE_LOOP
async def test_user_audio_is_read_at_one_token_per_100_ms(conn: Conn) -> None:
    await conn.send(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}}
    )
    await conn.until("session.updated")
    await conn.send(append(tone(seconds=3.0, frequency=300, amplitude=0.3)))
    await conn.send({"type": "input_audio_buffer.commit"})
    await conn.until("input_audio_buffer.committed")
    first = await reply_usage(conn)
    assert first["audio"] == 30 and first["cached"] == 0


@IN_MODULE_LOOP
async def test_the_conversation_grows_and_what_the_last_reply_read_is_cached(conn: Conn) -> None:
    await conn.send(text_item("a long question " * 350))  # 5,600 characters: ~1,400 tokens
    await conn.until("conversation.item.done")
    first = await reply_usage(conn)
    assert first["text"] > 1400 and first["cached"] == 0
    await conn.send(text_item("and one more thing"))
    await conn.until("conversation.item.done")
    second = await reply_usage(conn)
    # It read everything the first read, plus the first's reply and the new question.
    assert second["text"] > first["text"]
    assert second["cached"] >= CACHE_MIN_TOKENS and second["cached"] % CACHE_STEP_TOKENS == 0
    assert second["cached"] <= first["text"] + first["audio"]
    assert second["cached_text"] + second["cached_audio"] == second["cached"]


@IN_MODULE_LOOP
@pytest.mark.espeak
async def test_a_reply_read_again_counts_its_audio_up_to_where_it_was_truncated(conn: Conn) -> None:
    await conn.send({"type": "response.create"})  # a spoken reply
    done = await conn.until("response.done", timeout=30)
    item = done["response"]["output"][0]
    spoken_tokens = done["response"]["usage"]["output_token_details"]["audio_tokens"]
    assert spoken_tokens > 4
    whole = await reply_usage(conn)
    await conn.send(
        {"type": "conversation.item.truncate", "item_id": item["id"], "content_index": 0, "audio_end_ms": 100}
    )
    await conn.until("conversation.item.truncated")
    cut = await reply_usage(conn)
    assert whole["audio"] - cut["audio"] == spoken_tokens - 2  # 100 ms of it stays: 2 tokens
