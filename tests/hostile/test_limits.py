"""The specific holes found by hand (issue 16), each pinned: bad input answered 4xx in the right
shape, sizes and slow clients bounded, the origin check trusting no header of the request's own."""

from __future__ import annotations

import json
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rtkit._serve import HEADER_TIMEOUT, MAX_HEADER_BYTES, MAX_HEADER_FIELDS
from rtkit.broker import Broker, BrokerSettings
from rtkit.emulator import Emulator
from rtkit.emulator.routes import MAX_BODY_BYTES
from rtkit.schema import MAX_INSTRUCTIONS_CHARS
from tests.conftest import TEST_KEY
from tests.hostile.conftest import Servers, answers_normally, assert_api_error, assert_broker_error

JSON = {"Content-Type": "application/json"}
MAIN_KEY = {"Authorization": f"Bearer {TEST_KEY}"}


def broker_post(servers: Servers, http: httpx.Client, body: bytes, **headers: str) -> httpx.Response:
    r = http.post(f"{servers.broker.url}/api/client-secret", content=body, headers={**JSON, **headers})
    assert_broker_error(r)
    return r


def emulator_post(servers: Servers, http: httpx.Client, body: bytes) -> httpx.Response:
    r = http.post(f"{servers.emulator.base_url}/realtime/client_secrets", content=body, headers={**JSON, **MAIN_KEY})
    assert_api_error(r)
    return r


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 5_000 + b"]" * 5_000, "nests deeper"),
        (b'{"sessionId": "s", "session": {"instructions": "\\ud800"}}', "unpaired surrogate"),
        (b'{"sessionId": "s", "session": {"instructions": "ok"}, "x": 1e999}', "out of range"),
        (b'{"sessionId": NaN}', "not a JSON value"),
        (b'{"sessionId": "\xff"}', "not valid UTF-8"),
    ],
)
def test_broker_refuses_json_that_would_fail_later(
    servers: Servers, client: httpx.Client, body: bytes, reason: str
) -> None:
    r = broker_post(servers, client, body)
    assert r.status_code == 400 and r.json()["code"] == "invalid_json" and reason in r.json()["message"]


@pytest.mark.parametrize(
    "body",
    [b'{"session": ' * 5000, b'{"session": {"type": "realtime", "instructions": "\\udc00"}}', b"\xc3\x28"],
)
def test_emulator_client_secrets_refuses_json_it_cannot_carry(
    servers: Servers, client: httpx.Client, body: bytes
) -> None:
    r = emulator_post(servers, client, body)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("We could not parse the JSON body")


@pytest.mark.parametrize("session", [b"[" * 5000, b"\xff\xfe{}", b'{"type": "realtime", "model": Infinity}'])
def test_emulator_calls_refuses_a_bad_multipart_session(servers: Servers, client: httpx.Client, session: bytes) -> None:
    r = client.post(
        f"{servers.emulator.base_url}/realtime/calls",
        files={"sdp": (None, "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"), "session": (None, session)},
        headers=MAIN_KEY,
    )
    assert_api_error(r)
    assert r.status_code == 400 and r.json()["error"]["param"] == "session"


@pytest.mark.parametrize(
    "body",
    [b'{"drop_calls_after": 1e999}', b'{"latency": {"calls": Infinity}}', b'{"fail_mints": {"retry_after": NaN}}'],
)
def test_admin_refuses_non_finite_numbers_and_keeps_answering(
    servers: Servers, client: httpx.Client, body: bytes
) -> None:
    url = f"{servers.emulator.origin}/_rtkit/faults"
    admin = {"X-Rtkit-Admin-Token": servers.emulator.admin_token, **JSON}
    r = client.post(url, content=body, headers=admin)
    assert_api_error(r)
    assert r.status_code == 400
    assert client.get(url, headers=admin).status_code == 200


def test_instructions_beyond_the_limit_are_refused_as_the_service_words_it(
    servers: Servers, client: httpx.Client
) -> None:
    too_long = MAX_INSTRUCTIONS_CHARS + 1
    body = json.dumps({"session": {"type": "realtime", "instructions": "x" * too_long}}).encode()
    error = emulator_post(servers, client, body).json()["error"]
    assert error["code"] == "string_above_max_length" and error["param"] == "session.instructions"
    assert f"maximum length {MAX_INSTRUCTIONS_CHARS}, but got a string with length {too_long}" in error["message"]


def test_a_20_mb_body_is_refused_before_it_is_read(servers: Servers, client: httpx.Client) -> None:
    huge = json.dumps({"session": {"type": "realtime", "instructions": "x" * 20_000_000}}).encode()
    r = emulator_post(servers, client, huge)
    assert r.status_code == 413 and str(MAX_BODY_BYTES) in r.json()["error"]["message"]
    r = broker_post(servers, client, huge)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


def raw_exchange(port: int, data: bytes, *, wait: float = 5.0) -> tuple[bytes, float]:
    """Send ``data`` as it is; return what came back before the server closed, and after how long.

    The server may answer and close while a large head is still being sent; reading as we send keeps
    its answer from being lost to the reset that closing a socket with unread data causes."""
    started = time.monotonic()
    chunks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            for offset in range(0, len(data), 65536):
                sock.sendall(data[offset : offset + 65536])
                if select.select([sock], [], [], 0)[0]:
                    break
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
    return b"".join(chunks), time.monotonic() - started


def ports(servers: Servers) -> dict[str, int]:
    assert servers.broker._server.port is not None
    return {"broker": servers.broker._server.port, "emulator": servers.emulator.port}


def status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(10_000)) + b"\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADER_FIELDS))
        + b"\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n",
    ],
    ids=["1MB-header", "10000-headers", "101-headers", "just-over-16KiB"],
)
def test_oversized_request_heads_get_431_in_each_servers_shape(
    servers: Servers, client: httpx.Client, head: bytes
) -> None:
    for name, port in ports(servers).items():
        status, body = status_and_body(raw_exchange(port, head)[0])
        assert status == 431, (name, body)
        if name == "broker":
            assert body["code"] == "header_fields_too_large"
        else:
            assert isinstance(body["error"], dict) and body["error"]["type"] == "invalid_request_error"
    answers_normally(servers, client)


def test_headers_that_never_finish_are_cut_off_with_408(servers: Servers, client: httpx.Client) -> None:
    # Both servers at once, so that the suite waits for one deadline, not two.
    with ThreadPoolExecutor(2) as pool:
        results = dict(
            zip(
                ports(servers),
                pool.map(
                    lambda port: raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", wait=60),
                    ports(servers).values(),
                ),
                strict=True,
            )
        )
    for name, (answer, elapsed) in results.items():
        status, _ = status_and_body(answer)
        assert status == 408, name
        # Cut at the deadline, not minutes later (generous: a loaded CI machine is slow to schedule).
        assert HEADER_TIMEOUT - 0.5 <= elapsed < HEADER_TIMEOUT + 20, (name, elapsed)
    answers_normally(servers, client)


def test_an_origin_is_checked_against_the_brokers_own_address_not_the_host_header(
    servers: Servers, client: httpx.Client
) -> None:
    body = json.dumps({"sessionId": "o"}).encode()
    forged = broker_post(servers, client, body, Origin="http://evil.example", Host="evil.example")
    assert forged.status_code == 403 and forged.json()["code"] == "origin_not_allowed"
    port = ports(servers)["broker"]
    for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        assert broker_post(servers, client, body, Origin=own).status_code == 200, own
    assert broker_post(servers, client, body, Origin="http://127.0.0.1:5173").status_code == 200  # allowed


def test_a_refused_preflight_answers_in_the_brokers_error_format(servers: Servers, client: httpx.Client) -> None:
    r = client.options(
        f"{servers.broker.url}/api/client-secret",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert_broker_error(r)
    assert r.status_code == 403 and r.json()["code"] == "origin_not_allowed"
    r = client.options(
        f"{servers.broker.url}/api/client-secret",
        headers={
            "Origin": "http://127.0.0.1:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-forbidden",
        },
    )
    assert_broker_error(r)
    assert r.status_code == 400 and r.json()["code"] == "cors_preflight_rejected"


async def test_a_configured_public_origin_is_the_brokers_own(emulator: Emulator) -> None:
    settings = BrokerSettings(
        upstream_url=emulator.base_url, api_key=TEST_KEY, dev_mode=True, public_origins=["https://voice.example.org"]
    )
    async with Broker(settings) as broker, httpx.AsyncClient() as http:
        url = f"{broker.url}/api/client-secret"
        r = await http.post(url, json={"sessionId": "p"}, headers={"Origin": "https://voice.example.org"})
        assert r.status_code == 200
        r = await http.post(url, json={"sessionId": "p"}, headers={"Origin": "https://other.example.org"})
        assert r.status_code == 403
