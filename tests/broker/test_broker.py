"""POST /api/client-secret over real HTTP, with the real emulator upstream: success, cache, and every error row."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest
import websockets

from rtkit.broker import Broker
from rtkit.emulator import Emulator
from tests.broker.conftest import APP_TOKEN, ORIGIN, LogCapture, auth, settings
from tests.conftest import TEST_KEY

BODY = {"sessionId": "browser-tab-1", "capabilities": ["audio", "webrtc"]}


async def ask(http: httpx.AsyncClient, broker: Broker, body: Any = BODY, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", auth())
    return await http.post(f"{broker.url}/api/client-secret", json=body, headers=headers, **kw)


def assert_guide_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message", "code", "requestId", "retryAfter"}
    assert body["code"] == code
    assert body["requestId"] == r.headers["x-request-id"]
    assert body["message"] and body["error"][0].isupper()
    return dict(body)


async def test_mints_a_key_that_opens_a_realtime_session(
    broker: Broker, emulator: Emulator, http: httpx.AsyncClient
) -> None:
    r = await ask(http, broker)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"ephemeralKey", "expiresAt", "sessionId", "model"}
    assert body["ephemeralKey"].startswith("ek_") and body["sessionId"].startswith("sess_")
    assert body["model"] == "gpt-realtime" and body["expiresAt"].endswith("Z")
    assert r.headers["cache-control"] == "no-store"
    async with websockets.connect(
        f"{emulator.websocket_url}/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {body['ephemeralKey']}"},
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_second_request_is_served_from_the_cache(
    broker: Broker, emulator: Emulator, http: httpx.AsyncClient, logs: LogCapture
) -> None:
    first = (await ask(http, broker)).json()
    second = (await ask(http, broker)).json()
    other = (await ask(http, broker, {**BODY, "sessionId": "browser-tab-2"})).json()
    assert first["ephemeralKey"] == second["ephemeralKey"] != other["ephemeralKey"]
    assert emulator.keys.issued == 2
    audits = [json.loads(line) for line in logs.lines if '"broker.request"' in line]
    assert [a["cacheHit"] for a in audits] == [False, True, False]
    assert audits[0]["upstreamMs"] > 0 and audits[1]["upstreamMs"] is None


async def test_policy_lets_the_client_choose_voice_and_instructions_only(
    broker: Broker, emulator: Emulator, http: httpx.AsyncClient
) -> None:
    r = await ask(
        http,
        broker,
        {
            "sessionId": "s1",
            "capabilities": ["text"],
            "session": {"voice": "cedar", "instructions": "Talk like a teacher."},
        },
    )
    assert r.status_code == 200
    minted = emulator.keys.authenticate(r.json()["ephemeralKey"]).secret
    assert minted is not None
    assert minted.session["audio"]["output"]["voice"] == "cedar"
    assert minted.session["instructions"] == "Talk like a teacher."
    assert minted.session["output_modalities"] == ["text"]
    assert minted.session["model"] == "gpt-realtime"
    assert minted.expires_at - minted.created_at == 600


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({**BODY, "model": "gpt-4o"}, 400, "invalid_request"),
        ({**BODY, "session": {"model": "gpt-4o"}}, 400, "invalid_request"),
        ({"capabilities": ["audio"]}, 400, "invalid_request"),
        ({**BODY, "sessionId": 42}, 400, "invalid_request"),
        ({**BODY, "sessionId": "has spaces"}, 400, "invalid_request"),
        ({**BODY, "capabilities": ["telepathy"]}, 400, "invalid_request"),
        ([1, 2, 3], 400, "invalid_request"),
        ({**BODY, "session": {"voice": "darth"}}, 400, "voice_not_allowed"),
        ({**BODY, "session": {"instructions": "x" * 2001}}, 400, "instructions_too_long"),
    ],
)
async def test_bad_bodies_are_refused_in_the_guides_format(
    broker: Broker, http: httpx.AsyncClient, body: Any, status: int, code: str
) -> None:
    assert_guide_error(await ask(http, broker, body), status, code)


async def test_non_json_and_wrong_content_type_and_oversize(broker: Broker, http: httpx.AsyncClient) -> None:
    url = f"{broker.url}/api/client-secret"
    not_json = await http.post(url, content=b"{nope", headers=auth(**{"Content-Type": "application/json"}))
    assert_guide_error(not_json, 400, "invalid_json")
    form = await http.post(url, data={"sessionId": "x"}, headers=auth())
    assert_guide_error(form, 415, "unsupported_media_type")
    big = await http.post(
        url, content=b'{"sessionId": "' + b"x" * 20_000 + b'"}', headers=auth(**{"Content-Type": "application/json"})
    )
    assert_guide_error(big, 413, "payload_too_large")

    async def chunks() -> Any:
        for _ in range(40):
            yield b" " * 1000

    streamed = await http.post(url, content=chunks(), headers=auth(**{"Content-Type": "application/json"}))
    assert_guide_error(streamed, 413, "payload_too_large")


async def test_callers_need_a_valid_app_token(broker: Broker, http: httpx.AsyncClient) -> None:
    assert_guide_error(await ask(http, broker, headers={}), 401, "missing_token")
    assert_guide_error(await ask(http, broker, headers=auth("wrong-token")), 401, "invalid_token")


async def test_dev_mode_lets_anonymous_callers_in_and_says_so(
    emulator: Emulator, http: httpx.AsyncClient, logs: LogCapture
) -> None:
    async with Broker(settings(emulator, dev_mode=True)) as b:
        assert (await ask(http, b, headers={})).status_code == 200
    assert any("DEV MODE" in line for line in logs.lines)


async def test_origins_are_checked_and_cors_answers_allowed_ones(broker: Broker, http: httpx.AsyncClient) -> None:
    ok = await ask(http, broker, headers=auth(Origin=ORIGIN))
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in ok.headers["access-control-expose-headers"].lower()
    refused = await ask(http, broker, headers=auth(Origin="http://evil.example"))
    assert_guide_error(refused, 403, "origin_not_allowed")
    preflight = await http.options(
        f"{broker.url}/api/client-secret",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN


async def test_rate_limit_per_ip_answers_429_with_retry_after(emulator: Emulator, http: httpx.AsyncClient) -> None:
    async with Broker(settings(emulator, rate_limit_per_ip="3/minute")) as b:
        statuses = [(await ask(http, b)).status_code for _ in range(3)]
        limited = await ask(http, b)
    assert statuses == [200, 200, 200]
    body = assert_guide_error(limited, 429, "rate_limited")
    assert 0 < body["retryAfter"] <= 60_000
    assert 1 <= int(limited.headers["retry-after"]) <= 60


async def test_rate_limit_per_caller(emulator: Emulator, http: httpx.AsyncClient) -> None:
    async with Broker(settings(emulator, rate_limit_per_caller="2/minute")) as b:
        assert [(await ask(http, b)).status_code for _ in range(2)] == [200, 200]
        assert_guide_error(await ask(http, b), 429, "rate_limited")


@pytest.mark.parametrize(
    ("fault", "status", "code", "retry"),
    [
        ({"status": 429, "retry_after": 2}, 503, "upstream_rate_limited", 2000),
        ({"status": 429, "quota": True}, 503, "insufficient_quota", None),
        ({"status": 500}, 502, "upstream_unavailable", 2000),
        ({"status": 503}, 502, "upstream_unavailable", 2000),
    ],
)
async def test_upstream_failures_map_to_the_table(
    broker: Broker,
    emulator: Emulator,
    http: httpx.AsyncClient,
    fault: dict[str, Any],
    status: int,
    code: str,
    retry: int | None,
) -> None:
    emulator.faults.fail_next_mints(5, **fault)
    body = assert_guide_error(await ask(http, broker), status, code)
    assert body["retryAfter"] == retry


async def test_upstream_timeout_is_504(emulator: Emulator, http: httpx.AsyncClient) -> None:
    emulator.faults.add_latency("client_secrets", 1.0)
    async with Broker(settings(emulator, upstream_timeout=0.2, upstream_attempts=1)) as b:
        assert_guide_error(await ask(http, b), 504, "upstream_timeout")


async def test_wrong_main_key_is_the_operators_problem_502(emulator: Emulator, http: httpx.AsyncClient) -> None:
    async with Broker(settings(emulator, api_key="sk-not-the-right-one")) as b:
        body = assert_guide_error(await ask(http, b), 502, "upstream_auth_failed")
    assert "sk-not-the-right-one" not in json.dumps(body)


async def test_unreachable_upstream_is_502_and_not_ready(emulator: Emulator, http: httpx.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    async with Broker(settings(emulator, upstream_url=dead, upstream_attempts=1)) as b:
        assert_guide_error(await ask(http, b), 502, "upstream_unavailable")
        ready = await http.get(f"{b.url}/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["upstream"].startswith("unreachable")


async def test_request_ids_are_echoed_or_made(broker: Broker, http: httpx.AsyncClient) -> None:
    given = await ask(http, broker, headers=auth(**{"X-Request-ID": "trace-abc.123"}))
    made = await ask(http, broker, headers=auth(**{"X-Request-ID": "bad id with spaces"}))
    assert given.headers["x-request-id"] == "trace-abc.123"
    assert made.headers["x-request-id"].startswith("req_")


async def test_health_readiness_and_metrics(broker: Broker, http: httpx.AsyncClient) -> None:
    await ask(http, broker)
    await ask(http, broker)
    await ask(http, broker, headers={})
    assert (await http.get(f"{broker.url}/healthz")).json() == {"status": "ok"}
    ready = await http.get(f"{broker.url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"upstream": "ok"}
    text = (await http.get(f"{broker.url}/metrics")).text
    assert 'rtkit_broker_requests_total{outcome="ok"} 2.0' in text
    assert 'rtkit_broker_requests_total{outcome="missing_token"} 1.0' in text
    assert 'rtkit_broker_cache_total{result="hit"} 1.0' in text
    assert "rtkit_broker_request_seconds_bucket" in text and "rtkit_broker_upstream_seconds_count 1.0" in text


async def test_unknown_paths_and_methods_answer_in_the_guides_format(broker: Broker, http: httpx.AsyncClient) -> None:
    assert_guide_error(await http.get(f"{broker.url}/api/nothing"), 404, "not_found")
    assert_guide_error(await http.get(f"{broker.url}/api/client-secret"), 405, "method_not_allowed")


async def test_audit_log_has_one_json_line_per_request(
    broker: Broker, http: httpx.AsyncClient, logs: LogCapture
) -> None:
    await ask(http, broker, headers=auth(**{"User-Agent": "pytest-agent", "X-Request-ID": "r1"}))
    await ask(http, broker, headers={"X-Request-ID": "r2"})
    audits = [json.loads(line) for line in logs.lines if '"broker.request"' in line]
    assert [a["requestId"] for a in audits] == ["r1", "r2"]
    ok, refused = audits
    assert ok["outcome"] == "ok" and ok["status"] == 200 and ok["caller"] == "workshop"
    assert ok["userAgent"] == "pytest-agent" and ok["ip"] == "127.0.0.1" and ok["sessionId"] == "browser-tab-1"
    assert ok["key"].startswith("ek_…") and ok["realtimeSessionId"].startswith("sess_")
    assert refused["outcome"] == "missing_token" and refused["status"] == 401


async def test_no_secret_in_any_log_line_or_response(
    emulator: Emulator, http: httpx.AsyncClient, logs: LogCapture
) -> None:
    """The main key never leaves the broker; issued keys appear only in the response that delivers them."""
    responses: list[httpx.Response] = []
    async with Broker(settings(emulator, rate_limit_per_ip="8/minute")) as b:
        emulator.faults.fail_next_mints(1, status=500)
        for i in range(10):
            responses.append(await ask(http, b, {**BODY, "sessionId": f"tab-{i % 3}"}))
        responses.append(await ask(http, b, headers=auth("wrong")))
        for path in ("/metrics", "/readyz", "/healthz"):
            responses.append(await http.get(f"{b.url}{path}"))
    async with Broker(settings(emulator, api_key="sk-wrong-main-key-xyz")) as b:
        responses.append(await ask(http, b))
    issued = {r.json()["ephemeralKey"] for r in responses if r.status_code == 200 and "ephemeralKey" in r.text}
    assert len(issued) == 3
    assert {r.status_code for r in responses} >= {200, 401, 429, 502}
    for line in logs.lines:
        assert TEST_KEY not in line and "sk-wrong-main-key-xyz" not in line and APP_TOKEN not in line
        assert not any(value in line for value in issued), line
    for r in responses:
        text = r.text + json.dumps(dict(r.headers))
        assert TEST_KEY not in text and "sk-wrong-main-key-xyz" not in text
        delivered = r.json().get("ephemeralKey") if r.headers.get("content-type") == "application/json" else None
        assert not any(value in text for value in issued - {delivered})


async def test_a_caller_hanging_up_mid_body_is_not_an_internal_error(broker: Broker, logs: LogCapture) -> None:
    import asyncio
    from urllib.parse import urlsplit

    url = urlsplit(broker.url)
    _reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        b"POST /api/client-secret HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + APP_TOKEN.encode() + b'\r\nContent-Length: 500\r\n\r\n{"sessionId"'
    )
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    for _ in range(50):
        audits = [json.loads(line) for line in logs.lines if '"broker.request"' in line]
        if audits:
            break
        await asyncio.sleep(0.05)
    assert [a["outcome"] for a in audits] == ["client_disconnected"]
    assert not any("failed on request" in line for line in logs.lines)


async def test_the_brokers_own_page_is_same_origin_and_allowed(broker: Broker, http: httpx.AsyncClient) -> None:
    own = await ask(http, broker, headers=auth(Origin=broker.url))
    assert own.status_code == 200
