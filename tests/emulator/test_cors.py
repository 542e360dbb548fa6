"""CORS on the emulator, as the service answers it: ``POST /v1/realtime/calls`` takes an SDP offer from a page
on any origin (every browser app sends its offer there with an ``ek_`` key), unless the emulator is started
with a list of origins (``--cors-origin``, ``cors_origins``). No other route answers a preflight.

Real preflights against real emulators on 127.0.0.1; ``test_browser_cors.py`` has Debian's Chromium do it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError

from rtkit.cli import main
from rtkit.emulator import Emulator, EmulatorConfig
from tests.conftest import TEST_KEY, assert_valid_server_events, free_port, preflight_for
from tests.emulator.test_calls import offer

#: A Vite dev server, another port of this machine, a deployed app: none of them the emulator's origin.
PAGES = ["http://localhost:5173", "http://127.0.0.1:3000", "https://app.example"]
#: The default emulator is shared by the tests marked with this: none of them changes it.
shared_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def default_emulator() -> AsyncIterator[Emulator]:
    """An emulator started with no CORS setting at all, as ``rtkit emulator`` with no flags."""
    async with Emulator(api_key=TEST_KEY) as emu:
        yield emu
    assert_valid_server_events(list(emu.server_events))


def allowed_headers(response: httpx.Response) -> set[str]:
    return {h.strip().lower() for h in response.headers.get("access-control-allow-headers", "").split(",")}


@shared_loop
async def test_a_default_emulator_answers_the_calls_preflight_from_any_origin_and_no_other_route(
    default_emulator: Emulator,
) -> None:
    base = default_emulator.base_url
    async with httpx.AsyncClient() as http:
        for page in PAGES:
            answered = await http.options(f"{base}/realtime/calls", headers=preflight_for(page))
            assert answered.status_code == 200, (page, answered.text)
            assert answered.headers["access-control-allow-origin"] == "*"
            assert "POST" in answered.headers["access-control-allow-methods"]
            assert {"authorization", "content-type", "x-openai-agents-sdk"} <= allowed_headers(answered)
        # What no client of the service sends is not opened: a preflight asking for it is refused.
        other_header = await http.options(f"{base}/realtime/calls", headers=preflight_for(PAGES[0], "x-anything"))
        other_method = await http.options(
            f"{base}/realtime/calls", headers={**preflight_for(PAGES[0]), "Access-Control-Request-Method": "PUT"}
        )
        # The app's server mints with the main key; hangup is a call control; /_rtkit is the operator's.
        closed = {
            path: await http.options(f"{default_emulator.origin}{path}", headers=preflight_for(PAGES[0]))
            for path in (
                "/v1/realtime/client_secrets",
                "/v1/realtime/calls/rtc_123/hangup",
                "/_rtkit/faults",
                "/_rtkit/calls",
            )
        }
        minted = await http.post(
            f"{base}/realtime/client_secrets",
            headers={"Authorization": f"Bearer {TEST_KEY}", "Origin": PAGES[0]},
            json={"session": {"type": "realtime"}},
        )
    # A browser fails a preflight on its status alone (not 2xx), whatever ``Access-Control-Allow-Origin`` says.
    assert (other_header.status_code, other_header.text) == (400, "Disallowed CORS headers")
    assert (other_method.status_code, other_method.text) == (400, "Disallowed CORS method")
    for path, refused in closed.items():
        assert refused.status_code >= 400 and "access-control-allow-origin" not in refused.headers, path
    assert minted.status_code == 200 and "access-control-allow-origin" not in minted.headers


@shared_loop
async def test_a_cross_origin_page_reads_the_answer_its_location_and_a_refusal(default_emulator: Emulator) -> None:
    """The POST itself carries CORS too: without it the page could read neither the SDP answer, nor the call id
    in ``Location``, nor the 401's error body."""
    pc = await offer()
    try:
        async with httpx.AsyncClient() as http:
            answered = await http.post(
                f"{default_emulator.base_url}/realtime/calls?model=gpt-realtime",
                content=pc.localDescription.sdp,
                headers={"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/sdp", "Origin": PAGES[0]},
            )
            refused = await http.post(
                f"{default_emulator.base_url}/realtime/calls",
                content=pc.localDescription.sdp,
                headers={"Authorization": "Bearer ek_not_a_key", "Content-Type": "application/sdp", "Origin": PAGES[1]},
            )
    finally:
        await pc.close()
    assert answered.status_code == 201 and answered.headers["location"].startswith("/v1/realtime/calls/rtc_")
    assert answered.headers["access-control-allow-origin"] == "*"
    exposed = {h.strip().lower() for h in answered.headers["access-control-expose-headers"].split(",")}
    assert "location" in exposed
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.headers["access-control-allow-origin"] == "*"


async def test_an_emulator_given_origins_answers_only_those_written_as_a_browser_writes_them() -> None:
    page = "http://127.0.0.1:3000"
    # As an operator may type them: a trailing slash, capitals, the default port. A browser sends none of it.
    given = [page + "/", "HTTP://LocalHost:5173", "https://app.example:443"]
    async with Emulator(api_key=TEST_KEY, cors_origins=given) as emu, httpx.AsyncClient() as http:
        listed = {o: await http.options(f"{emu.base_url}/realtime/calls", headers=preflight_for(o)) for o in PAGES}
        foreign = await http.options(f"{emu.base_url}/realtime/calls", headers=preflight_for("http://elsewhere:1"))
        secrets_preflight = await http.options(f"{emu.base_url}/realtime/client_secrets", headers=preflight_for(page))
        pc = await offer()
        posted = await http.post(
            f"{emu.base_url}/realtime/calls",
            content=pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/sdp", "Origin": page},
        )
        await pc.close()
    assert emu.cors.origins == ["http://127.0.0.1:3000", "http://localhost:5173", "https://app.example"]
    for origin, answered in listed.items():
        assert answered.status_code == 200, (origin, answered.text)
        assert answered.headers["access-control-allow-origin"] == origin
        assert "x-openai-agents-sdk" in allowed_headers(answered)
    assert foreign.status_code == 400 and "access-control-allow-origin" not in foreign.headers
    assert "access-control-allow-origin" not in secrets_preflight.headers
    assert posted.status_code == 201
    assert posted.headers["access-control-allow-origin"] == page
    assert "location" in posted.headers["access-control-expose-headers"].lower()
    assert_valid_server_events(list(emu.server_events))


async def test_an_origin_allowed_at_runtime_gets_cors_from_then_on() -> None:
    """``BrowserCall`` learns the notebook page's origin only when the page shows the widget: an emulator
    started with a list (here, empty) opens to it then; an emulator open to any origin stays open to all."""
    page = "http://127.0.0.1:8888"
    async with Emulator(api_key=TEST_KEY, cors_origins=[]) as emu, Emulator(api_key=TEST_KEY) as default:
        async with httpx.AsyncClient() as http:
            before = await http.options(f"{emu.base_url}/realtime/calls", headers=preflight_for(page))
            emu.allow_origin(page + "/")
            after = await http.options(f"{emu.base_url}/realtime/calls", headers=preflight_for(page))
            with pytest.raises(ValueError, match="not a web origin"):
                emu.allow_origin("javascript:alert(1)")
            default.allow_origin(page)
            still_any = await http.options(f"{default.base_url}/realtime/calls", headers=preflight_for(PAGES[0]))
    assert before.status_code == 400 and "access-control-allow-origin" not in before.headers
    assert after.status_code == 200 and after.headers["access-control-allow-origin"] == page
    assert still_any.status_code == 200 and still_any.headers["access-control-allow-origin"] == "*"


def test_the_cors_origin_flag_opens_calls_to_the_listed_origins_only() -> None:
    """``rtkit emulator --cors-origin A --cors-origin B``, run as a user would."""
    port = free_port()
    listed = ["http://localhost:5173", "http://127.0.0.1:3000"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTKIT_EMULATOR_")}
    argv = [sys.executable, "-m", "rtkit", "emulator", "--port", str(port), "--log-level", "warning"]
    for origin in listed:
        argv += ["--cors-origin", origin]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        while not any("admin token" in line for line in lines) and len(lines) < 20 and proc.poll() is None:
            lines.append(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1/realtime/calls"
        answers = {o: httpx.options(url, headers=preflight_for(o)) for o in [*listed, "http://evil.example"]}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert f"browser pages may POST /v1/realtime/calls from: {', '.join(listed)}" in "".join(lines), lines
    for origin in listed:
        assert answers[origin].status_code == 200 and answers[origin].headers["access-control-allow-origin"] == origin
    refused = answers["http://evil.example"]
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


def test_the_environment_sets_the_origins_and_what_is_not_an_origin_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RTKIT_EMULATOR_CORS_ORIGINS", '["http://localhost:5173/"]')
    assert EmulatorConfig().cors_origins == ["http://localhost:5173"]
    monkeypatch.delenv("RTKIT_EMULATOR_CORS_ORIGINS")
    assert EmulatorConfig().cors_origins == ["*"]
    # A bare host:port (the usual slip) is no origin a browser sends: it would never match, so it is refused.
    with pytest.raises(ValidationError, match="not a web origin: 'localhost:5173'"):
        EmulatorConfig(cors_origins=["localhost:5173"])
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--cors-origin", "localhost:5173"])
    assert exited.value.code == 2
    assert "--cors-origin: not a web origin: 'localhost:5173'" in capsys.readouterr().err
