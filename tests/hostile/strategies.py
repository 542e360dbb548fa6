"""Request bodies and headers a stranger might send: valid-looking, subtly wrong, and plain garbage."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Same examples on every run (a CI failure reproduces), no example database written into the tree.
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text that may hold lone surrogates: json.dumps escapes them as \udXXX, as a hostile client would.
nasty_text = st.text(st.characters(categories=["L", "N", "P", "S", "Zs", "Cc", "Cs"]), max_size=40)
numbers = st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.sampled_from([1e308, -0.0, 10**40])
scalars = st.none() | st.booleans() | numbers | nasty_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=16,
)


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()


deep = st.integers(1, 3000).flatmap(
    lambda n: st.sampled_from([b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n, b"[" * n])
)
special = st.sampled_from(
    [b"NaN", b"Infinity", b'{"a": -Infinity}', b"1e999", b'"\\ud800"', b'{"\\udfff": 1}', b"\xff\xfe\x00", b""]
)
bodies = json_values.map(encode) | st.binary(max_size=200) | deep | special


def with_random_fields(base: dict[str, Any], fields: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base``, plus any subset of ``fields`` (each a strategy), plus stray keys now and then."""
    return st.fixed_dictionaries(
        {k: st.just(v) for k, v in base.items()},
        optional={**fields, "stray": json_values},
    )


broker_bodies = with_random_fields(
    {},
    {
        "sessionId": st.text(max_size=140) | json_values,
        "capabilities": st.lists(st.sampled_from(["audio", "text", "webrtc", "websocket", "video"]), max_size=6)
        | json_values,
        "session": with_random_fields({}, {"voice": nasty_text | json_values, "instructions": nasty_text | json_values})
        | json_values,
    },
).map(encode)

_session_fields = {
    "model": st.sampled_from(["gpt-realtime", "gpt-4o", "", "x" * 300]) | json_values,
    "instructions": nasty_text | json_values,
    "output_modalities": st.lists(st.sampled_from(["audio", "text", "video"]), max_size=3) | json_values,
    "audio": json_values,
    "tools": st.lists(json_values, max_size=3) | json_values,
    "tool_choice": json_values,
    "max_output_tokens": numbers | st.just("inf") | json_values,
    "tracing": json_values,
    "truncation": json_values,
    "include": json_values,
}
session_objects = with_random_fields({"type": "realtime"}, _session_fields) | st.fixed_dictionaries(
    {"type": st.sampled_from(["transcription", "bogus", 1])}, optional=_session_fields
)

client_secret_bodies = (
    with_random_fields(
        {},
        {
            "session": session_objects | json_values,
            "expires_after": st.fixed_dictionaries(
                {}, optional={"anchor": st.sampled_from(["created_at", "x"]) | json_values, "seconds": numbers}
            )
            | json_values,
        },
    ).map(encode)
    | bodies
)

fault_bodies = (
    with_random_fields(
        {},
        {
            "fail_mints": json_values,
            "reject_calls": json_values,
            "key_ttl_seconds": numbers | json_values,
            "latency": st.dictionaries(st.sampled_from(["calls", "client_secrets", "websocket", "x"]), numbers)
            | json_values,
            "drop_calls_after": numbers | json_values,
            "block_media": json_values,
        },
    ).map(encode)
    | special
    | deep
    | st.sampled_from(
        [b'{"drop_calls_after": 1e999}', b'{"latency": {"calls": 1e999}}', b'{"fail_mints": {"retry_after": 1e400}}']
    )
)

sdp_texts = st.sampled_from(["", "v=0\r\n", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"]) | st.text(max_size=300)

# Header names and values an HTTP client library will send (the framing headers are left alone: they
# are the raw-socket test's business).
header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,24}", fullmatch=True).filter(
    lambda n: n.lower() not in {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade"}
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300).map(str.strip)
headers = st.dictionaries(header_names, header_values, max_size=12)
# Known headers with values that should be handled, not crashed on.
pointed_headers = st.fixed_dictionaries(
    {},
    optional={
        "Origin": header_values | st.sampled_from(["null", "http://evil.example", "http://127.0.0.1:5173"]),
        "Authorization": header_values | st.sampled_from(["Bearer", "Bearer x y", "Basic abc", "bearer\tx"]),
        "X-Request-ID": header_values,
        "Content-Type": header_values
        | st.sampled_from(["application/json; charset=latin-1", "multipart/form-data", "application/sdp"]),
        "Sec-WebSocket-Protocol": header_values,
        "OpenAI-Beta": header_values,
    },
)
