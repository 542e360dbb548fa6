"""The emulator's WebSocket under abuse: garbage, hostile nesting, binary frames, oversize frames and
floods each get the service's answer (an ``error`` event, or the protocol's close for an oversize
frame), the connection survives what the service would survive, and the emulator serves others."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from rtkit.emulator.limits import MAX_EVENT_FRAME_BYTES
from tests.conftest import TEST_KEY
from tests.hostile import strategies as s
from tests.hostile.conftest import Servers, answers_normally

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def open_ws(servers: Servers) -> ClientConnection:
    ws = connect(
        f"{servers.emulator.websocket_url}/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {TEST_KEY}"},
        max_size=None,
        open_timeout=10,
    )
    assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
    return ws


def next_of(ws: ClientConnection, *kinds: str) -> dict[str, Any]:
    while True:
        event = json.loads(ws.recv(timeout=10))
        if event["type"] in kinds:
            return event  # type: ignore[no-any-return]


def still_serves(ws: ClientConnection) -> None:
    """The same connection still takes an ordinary client event and answers it."""
    ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "Still here."}}))
    updated = next_of(ws, "session.updated")
    assert updated["session"]["instructions"] == "Still here."


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 100_000,
        '{"type": "session.update", "session": ' + '{"a": ' * 500 + "1" + "}" * 501,
        '{"type": "session.update", "session": {"type": "realtime", "instructions": "\\ud800"}}',
        '{"type": "response.create", "response": {"max_output_tokens": 1e999}}',
        "NaN",
        b"\xff\xfe\x00\x01",
        b'{"type": "input_audio_buffer.clear"}',
    ],
    ids=["deep-array", "deep-object", "lone-surrogate", "huge-number", "nan", "binary-garbage", "binary-json"],
)
def test_a_bad_frame_gets_an_error_event_and_the_connection_stays(servers: Servers, frame: str | bytes) -> None:
    with open_ws(servers) as ws:
        ws.send(frame)
        if frame == b'{"type": "input_audio_buffer.clear"}':
            # A JSON event in a binary frame is carried out as the same text would be.
            assert next_of(ws, "input_audio_buffer.cleared", "error")["type"] == "input_audio_buffer.cleared"
        else:
            error = next_of(ws, "error")["error"]
            assert error["type"] == "invalid_request_error" and error["message"]
        still_serves(ws)


def test_random_frames_never_close_the_connection(servers: Servers) -> None:
    @s.FUZZ
    @given(frames=st.lists(s.json_values.map(json.dumps) | st.text(max_size=80) | st.binary(max_size=80), max_size=8))
    def check(frames: list[str | bytes]) -> None:
        with open_ws(servers) as ws:
            for frame in frames:
                ws.send(frame)
            still_serves(ws)

    check()


def test_an_oversize_frame_closes_with_1009_and_a_reason_and_others_are_unaffected(
    servers: Servers, client: Any
) -> None:
    # The frame limit sits above the largest append the service takes (15 MiB of audio, 20 MiB of base64):
    # an append a little over it gets an error event (tests/emulator/test_formats_and_limits.py); only a frame
    # past the limit is closed, with a reason that says why.
    with open_ws(servers) as ws:
        ws.send("x" * (MAX_EVENT_FRAME_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert closed.value.rcvd.reason.endswith(f"exceeds limit of {MAX_EVENT_FRAME_BYTES} bytes")
    answers_normally(servers, client)


def test_a_flood_of_bad_events_is_answered_in_order_and_absorbed(servers: Servers, client: Any) -> None:
    with open_ws(servers) as ws:
        for i in range(2000):
            ws.send(json.dumps({"type": "no.such.event", "event_id": f"evt_{i}"}))
        for i in range(2000):
            assert next_of(ws, "error")["error"]["event_id"] == f"evt_{i}"
        still_serves(ws)
    answers_normally(servers, client)
