"""Property-based: whatever body or headers a stranger sends, no 5xx, every refusal in its documented
shape, and both servers answer an ordinary client afterwards."""

from __future__ import annotations

import socket

import httpx
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import TEST_KEY
from tests.hostile import strategies as s
from tests.hostile.conftest import Servers, answers_normally, assert_api_error, assert_broker_error

JSON = {"Content-Type": "application/json"}
MAIN_KEY = {"Authorization": f"Bearer {TEST_KEY}"}


def test_broker_client_secret_bodies_never_fail_the_server(servers: Servers, client: httpx.Client) -> None:
    @s.FUZZ
    @given(body=s.broker_bodies | s.bodies)
    def check(body: bytes) -> None:
        assert_broker_error(client.post(f"{servers.broker.url}/api/client-secret", content=body, headers=JSON))

    check()
    answers_normally(servers, client)


def test_broker_headers_never_fail_the_server(servers: Servers, client: httpx.Client) -> None:
    @s.FUZZ
    @given(headers=s.headers, pointed=s.pointed_headers, method=st.sampled_from(["POST", "OPTIONS", "GET"]))
    def check(headers: dict[str, str], pointed: dict[str, str], method: str) -> None:
        sent = {**headers, **pointed}
        if method == "OPTIONS":
            sent.setdefault("Access-Control-Request-Method", "POST")
        r = client.request(method, f"{servers.broker.url}/api/client-secret", json={"sessionId": "s"}, headers=sent)
        assert_broker_error(r)

    check()
    answers_normally(servers, client)


def test_emulator_client_secrets_bodies_never_fail_the_server(servers: Servers, client: httpx.Client) -> None:
    @s.FUZZ
    @given(body=s.client_secret_bodies)
    def check(body: bytes) -> None:
        r = client.post(
            f"{servers.emulator.base_url}/realtime/client_secrets", content=body, headers={**MAIN_KEY, **JSON}
        )
        assert_api_error(r)

    check()
    answers_normally(servers, client)


def test_emulator_calls_offers_never_fail_the_server(servers: Servers, client: httpx.Client) -> None:
    @s.FUZZ
    @given(sdp=s.sdp_texts, session=s.client_secret_bodies | s.session_objects.map(s.encode), multipart=st.booleans())
    def check(sdp: str, session: bytes, multipart: bool) -> None:
        url = f"{servers.emulator.base_url}/realtime/calls"
        if multipart:
            r = client.post(url, files={"sdp": (None, sdp), "session": (None, session)}, headers=MAIN_KEY)
        else:
            r = client.post(url, content=sdp.encode(), headers={**MAIN_KEY, "Content-Type": "application/sdp"})
        assert_api_error(r)
        assert r.status_code != 201, "a fuzzed offer opened a call"

    check()
    answers_normally(servers, client)


def test_emulator_admin_bodies_never_fail_the_server(servers: Servers, client: httpx.Client) -> None:
    admin = {"X-Rtkit-Admin-Token": servers.emulator.admin_token, **JSON}
    url = f"{servers.emulator.origin}/_rtkit/faults"

    @s.FUZZ
    @given(body=s.fault_bodies)
    def check(body: bytes) -> None:
        assert_api_error(client.post(url, content=body, headers=admin))
        # Whatever was applied, the plan still reads (a non-finite number once broke every later read).
        assert client.get(url, headers=admin).status_code == 200
        client.post(url, json={"clear": True}, headers=admin)

    check()
    answers_normally(servers, client)


def test_emulator_headers_never_fail_the_server(servers: Servers, client: httpx.Client) -> None:
    @s.FUZZ
    @given(headers=s.headers, pointed=s.pointed_headers)
    def check(headers: dict[str, str], pointed: dict[str, str]) -> None:
        r = client.post(f"{servers.emulator.base_url}/realtime/client_secrets", json={}, headers={**headers, **pointed})
        assert_api_error(r)

    check()
    answers_normally(servers, client)


def _raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass  # a head that is still incomplete is the header deadline's business (test_limits)
    return b"".join(chunks)


def test_malformed_request_heads_get_a_4xx_or_nothing(servers: Servers, client: httpx.Client) -> None:
    @s.FUZZ
    @given(
        garbage=st.binary(max_size=300),
        where=st.sampled_from(["line", "header"]),
        port_of=st.sampled_from(["broker", "emulator"]),
    )
    def check(garbage: bytes, where: str, port_of: str) -> None:
        port = servers.broker._server.port if port_of == "broker" else servers.emulator.port
        assert port is not None
        if where == "line":
            data = garbage + b"\r\nHost: x\r\n\r\n"
        else:
            data = b"POST /v1/realtime/client_secrets HTTP/1.1\r\nHost: x\r\n" + garbage + b"\r\n\r\n"
        answer = _raw_exchange(port, data)
        if answer:
            status = answer.split(b" ", 2)[1]
            assert status.isdigit() and int(status) < 500, answer[:200]

    check()
    answers_normally(servers, client)
