"""MCP tools, carried out: the emulator lists the tools of the MCP server a session names and runs the calls its
rule makes, as an MCP client of that server, with the service's events and items (``mcp_list_tools``,
``mcp_call``, ``mcp_approval_request``/``response``). A real MCP server (the ``mcp`` package's MCPServer over
streamable HTTP) runs on 127.0.0.1 beside one emulator; raw WebSockets; every event received is validated with
the SDK's ``RealtimeServerEvent``."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

from rtkit.emulator import Emulator
from tests.conftest import TEST_KEY, assert_valid_server_events, free_port
from tests.emulator.wire import Conn, shared_conn, shared_emulator, text_item

pytestmark = pytest.mark.asyncio(loop_scope="module")


class ToolServer:
    """A tiny MCP server: ``add`` (read-only), ``get_weather`` and ``explode`` (always fails), with a record of
    the calls it ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.mcp = MCPServer("weather-and-sums")

        @self.mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
        def add(a: int, b: int) -> int:
            """Add two integers."""
            self.calls.append(("add", {"a": a, "b": b}))
            return a + b

        @self.mcp.tool()
        def get_weather(city: str) -> str:
            """The weather in a city."""
            self.calls.append(("get_weather", {"city": city}))
            return f"Sunny in {city}"

        @self.mcp.tool()
        def explode(reason: str) -> str:
            """Always fails."""
            raise ValueError(reason)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        config = uvicorn.Config(self.mcp.streamable_http_app(), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ToolServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the MCP server did not start")
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def tool_server() -> Iterator[ToolServer]:
    with ToolServer() as server:
        yield server


emulator = shared_emulator()


conn = shared_conn()


def mcp_tool(url: str, **options: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "tools", "server_url": url, **options}


async def configure(conn: Conn, *tools: dict[str, Any]) -> None:
    await conn.send(
        {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"], "tools": list(tools)}}
    )
    await conn.until("session.updated")


async def listed(conn: Conn) -> dict[str, Any]:
    """The ``mcp_list_tools`` item once its listing ended (``conversation.item.done``)."""
    while True:
        done = await conn.until("conversation.item.done")
        if done["item"]["type"] == "mcp_list_tools":
            return dict(done["item"])


async def respond(conn: Conn, text: str | None = None) -> dict[str, Any]:
    """Optionally say ``text``, ask for a response and return its ``response.done``."""
    if text is not None:
        await conn.send(text_item(text))
    await conn.send({"type": "response.create"})
    return (await conn.until("response.done"))["response"]


def types_since(conn: Conn, start: int) -> list[str]:
    return [e["type"] for e in conn.seen[start:]]


async def test_session_update_lists_the_servers_tools_with_their_schemas(conn: Conn, tool_server: ToolServer) -> None:
    await configure(conn, mcp_tool(tool_server.url))
    start = len(conn.seen)
    item = await listed(conn)
    seen = types_since(conn, start)
    assert seen[:2] == ["conversation.item.added", "mcp_list_tools.in_progress"]
    assert seen[-2:] == ["mcp_list_tools.completed", "conversation.item.done"]
    assert item["server_label"] == "tools" and item["id"] == conn.seen[start + 1]["item_id"]
    served = {t.name: t for t in await tool_server.mcp.list_tools()}
    assert {t["name"] for t in item["tools"]} == set(served) == {"add", "get_weather", "explode"}
    for tool in item["tools"]:
        assert tool["input_schema"] == served[tool["name"]].input_schema
        assert tool["description"] == served[tool["name"]].description
    assert next(t for t in item["tools"] if t["name"] == "add")["annotations"] == {"readOnlyHint": True}
    # The same definition again lists nothing anew.
    await configure(conn, mcp_tool(tool_server.url))
    await conn.send({"type": "input_audio_buffer.clear"})
    await conn.until("input_audio_buffer.cleared")
    assert "mcp_list_tools.in_progress" not in types_since(conn, start + len(seen))


async def test_a_key_minted_with_an_mcp_tool_lists_its_tools_as_the_session_starts(
    emulator: Emulator, tool_server: ToolServer
) -> None:
    async with httpx.AsyncClient() as http:
        minted = await http.post(
            f"{emulator.base_url}/realtime/client_secrets",
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            json={"session": {"type": "realtime", "tools": [mcp_tool(tool_server.url, allowed_tools=["add"])]}},
        )
    async with websockets.connect(
        f"{emulator.websocket_url}/realtime", additional_headers={"Authorization": f"Bearer {minted.json()['value']}"}
    ) as ws:
        conn = Conn(ws)
        await conn.until("session.created")
        item = await listed(conn)
    assert [t["name"] for t in item["tools"]] == ["add"]
    assert [e["type"] for e in conn.seen][:3] == [
        "session.created",
        "conversation.item.added",
        "mcp_list_tools.in_progress",
    ]
    assert_valid_server_events(conn.seen)


async def test_a_server_that_does_not_answer_fails_the_listing_with_the_reason(
    conn: Conn, tool_server: ToolServer
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/mcp"
    await conn.send(
        {
            "type": "session.update",
            "event_id": "evt_tools",
            "session": {"type": "realtime", "tools": [mcp_tool(nobody, server_label="nobody")]},
        }
    )
    start = len(conn.seen)
    item = await listed(conn)
    error = (await conn.until("error"))["error"]
    assert "mcp_list_tools.failed" in types_since(conn, start) and "mcp_list_tools.completed" not in types_since(
        conn, start
    )
    assert item["tools"] == []
    assert (error["type"], error["code"], error["param"], error["event_id"]) == (
        "external_connector_error",
        "protocol_error",
        "tools",
        "evt_tools",
    )
    assert error["message"].startswith("Error retrieving tool list from MCP server: 'nobody'. Could not connect")
    # A server that answers with an HTTP error: its status is the reason.
    wrong_path = tool_server.url.replace("/mcp", "/not-mcp")
    await conn.send({"type": "session.update", "session": {"type": "realtime", "tools": [mcp_tool(wrong_path)]}})
    await listed(conn)
    error = (await conn.until("error"))["error"]
    assert error["code"] == "http_error"
    assert error["message"] == "Error retrieving tool list from MCP server: 'tools'. Http status code: 404 (Not Found)"


async def test_a_call_runs_on_the_server_and_its_output_is_in_the_mcp_call_item(
    conn: Conn, tool_server: ToolServer
) -> None:
    await configure(conn, mcp_tool(tool_server.url, require_approval="never"))
    await listed(conn)
    start = len(conn.seen)
    response = await respond(conn, "Please add 2 and 3.")
    seen = types_since(conn, start)
    assert response["status"] == "completed"
    [item] = response["output"]
    assert (item["type"], item["server_label"], item["name"]) == ("mcp_call", "tools", "add")
    assert json.loads(item["arguments"]) == {"a": 2, "b": 3}
    assert item["output"] == "5" and item["error"] is None
    assert ("add", {"a": 2, "b": 3}) in tool_server.calls
    order = [
        "response.output_item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_item.done",
        "response.done",
    ]
    positions = [seen.index(kind) for kind in order]
    assert positions == sorted(positions)
    arguments = "".join(e["delta"] for e in conn.seen[start:] if e["type"] == "response.mcp_call_arguments.delta")
    assert arguments == item["arguments"]
    # The client asks again: the reply says what the tool returned (the service does not do this by itself).
    reply = await respond(conn)
    assert reply["output"][0]["content"][0]["text"] == "The add tool of tools returned 5"


async def test_an_mcp_tool_given_to_one_response_is_listed_before_that_response_calls_it(
    conn: Conn, tool_server: ToolServer
) -> None:
    await conn.send(text_item("Please add 40 and 2."))
    start = len(conn.seen)
    await conn.send(
        {
            "type": "response.create",
            "response": {"output_modalities": ["text"], "tools": [mcp_tool(tool_server.url, require_approval="never")]},
        }
    )
    response = (await conn.until("response.done"))["response"]
    seen = types_since(conn, start)
    assert seen.index("mcp_list_tools.completed") < seen.index("response.mcp_call.in_progress")
    assert response["output"][0]["output"] == "42"


async def test_a_tool_that_fails_fails_the_call_with_its_error_in_the_item(conn: Conn, tool_server: ToolServer) -> None:
    await configure(conn, mcp_tool(tool_server.url, require_approval="never"))
    await listed(conn)
    start = len(conn.seen)
    response = await respond(conn, 'Now explode with "a test".')
    [item] = response["output"]
    assert item["type"] == "mcp_call" and json.loads(item["arguments"]) == {"reason": "a test"}
    assert item["output"] is None
    assert item["error"] == {"type": "tool_execution_error", "message": "Error executing tool explode"}
    assert "response.mcp_call.failed" in types_since(conn, start)
    assert "response.mcp_call.completed" not in types_since(conn, start)


async def test_a_call_that_needs_approval_runs_only_once_the_client_approves(
    conn: Conn, tool_server: ToolServer
) -> None:
    await configure(conn, mcp_tool(tool_server.url))  # require_approval: "always" is the default
    await listed(conn)
    before = len(tool_server.calls)
    asked = await respond(conn, 'What is the weather in "Lyon"? Use get_weather.')
    [request] = asked["output"]
    assert (request["type"], request["name"], request["server_label"]) == (
        "mcp_approval_request",
        "get_weather",
        "tools",
    )
    assert json.loads(request["arguments"]) == {"city": "Lyon"}
    assert len(tool_server.calls) == before  # nothing ran yet
    approval = {
        "type": "mcp_approval_response",
        "id": "approval_1",
        "approval_request_id": request["id"],
        "approve": True,
    }
    await conn.send({"type": "conversation.item.create", "item": approval})
    await conn.until("conversation.item.done")
    ran = await respond(conn)
    [call] = ran["output"]
    assert (call["type"], call["approval_request_id"], call["output"]) == ("mcp_call", request["id"], "Sunny in Lyon")
    assert tool_server.calls[before:] == [("get_weather", {"city": "Lyon"})]
    # Refused: nothing runs, and the reply says so.
    asked = await respond(conn, 'And in "Nice"? get_weather again.')
    refusal = {**approval, "id": "approval_2", "approval_request_id": asked["output"][0]["id"], "approve": False}
    await conn.send({"type": "conversation.item.create", "item": refusal})
    await conn.until("conversation.item.done")
    reply = await respond(conn)
    assert reply["output"][0]["type"] == "message"
    assert reply["output"][0]["content"][0]["text"] == "The get_weather tool call was not approved."
    assert len(tool_server.calls) == before + 1


async def test_allowed_tools_limits_what_is_listed_and_what_can_be_called(conn: Conn, tool_server: ToolServer) -> None:
    await configure(conn, mcp_tool(tool_server.url, allowed_tools=["get_weather"], require_approval="never"))
    assert [t["name"] for t in (await listed(conn))["tools"]] == ["get_weather"]
    not_allowed = await respond(conn, "Please add 2 and 3.")
    assert [o["type"] for o in not_allowed["output"]] == ["message"]
    allowed = await respond(conn, 'The weather in "Oslo", please: get_weather.')
    assert allowed["output"][0]["output"] == "Sunny in Oslo"
    # A filter: only the read-only tools.
    filtered = mcp_tool(tool_server.url, allowed_tools={"read_only": True}, require_approval="never")
    await configure(conn, filtered)
    assert [t["name"] for t in (await listed(conn))["tools"]] == ["add"]


async def test_closing_the_session_while_a_listing_runs_cancels_it(emulator: Emulator) -> None:
    """A server that never answers: the listing waits, and leaving the session ends it with nothing left over."""
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    async with (
        silent,
        websockets.connect(
            f"{emulator.websocket_url}/realtime?model=gpt-realtime",
            additional_headers={"Authorization": f"Bearer {TEST_KEY}"},
        ) as ws,
    ):
        conn = Conn(ws)
        await conn.until("session.created")
        await configure(conn, mcp_tool(f"http://127.0.0.1:{port}/mcp"))
        await conn.until("mcp_list_tools.in_progress")
    leftover = [t for t in asyncio.all_tasks() if "_list_mcp_tools" in repr(t.get_coro())]
    for _ in range(50):
        leftover = [t for t in leftover if not t.done()]
        if not leftover:
            break
        await asyncio.sleep(0.02)
    assert not leftover
    assert_valid_server_events(conn.seen)
