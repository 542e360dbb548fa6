"""MCP tools, carried out: the emulator is an MCP client of the servers a session names, as the service is.

A ``{"type": "mcp", "server_label", "server_url", ...}`` tool makes the service list the server's tools when the
session is configured (``mcp_list_tools.in_progress`` → ``completed`` or ``failed``, and an ``mcp_list_tools``
item naming the tools it imported) and run the calls the model makes (an ``mcp_call`` item with the server's
output or error), after the client's approval where ``require_approval`` asks for it. Here the listing and the
calls go to the real server over MCP's streamable HTTP (the ``mcp`` package's client); the *choice* of a tool is
the emulator's rule (``tools.choose_tool``), since there is no model.

This module holds the session's MCP state (``McpTools``: pure, no I/O) and the two network operations
(``list_tools``, ``call_tool``), each bounded by ``MCP_TIMEOUT``; the engine runs those as tasks.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult
from mcp.types.jsonrpc import CONNECTION_CLOSED, REQUEST_TIMEOUT

from rtkit._ids import new_id
from rtkit.emulator.stream import Event, OutputItem
from rtkit.emulator.tools import ToolCall

__all__ = [
    "MCP_TIMEOUT",
    "McpApprovalRequestOutput",
    "McpCallOutput",
    "McpFailure",
    "McpListing",
    "McpServer",
    "McpTools",
    "call_tool",
    "list_tools",
    "mcp_report",
]

#: Seconds a listing or a call may take, connection included, before it fails (the service's bound is not
#: documented; an MCP client's usual one is tens of seconds).
MCP_TIMEOUT = 20.0
#: A server that pages its tool list forever must not hold the session.
_MAX_PAGES = 100


class McpFailure(Exception):
    """A listing or a call that failed; ``error`` is the ``mcp_call`` item's ``error`` (its three kinds)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error

    def listing_error(self, label: str) -> tuple[str, str]:
        """(code, message) of the ``error`` event that says why ``mcp_list_tools.failed``, in the words the
        Responses API uses for the same failure (``Error retrieving tool list from MCP server: ...``)."""
        if self.error["type"] == "http_error":
            detail = f"Http status code: {self.error['message']}"
        else:
            detail = self.error["message"]
        return self.error["type"], f"Error retrieving tool list from MCP server: '{label}'. {detail}"


@dataclass(frozen=True)
class McpServer:
    """One ``mcp`` tool of a session, as the client configured it."""

    label: str
    url: str | None = None
    #: Connectors and tunnels are OpenAI's; the emulator can reach neither.
    connector_id: str | None = None
    tunnel_id: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    allowed_tools: Any = None
    require_approval: Any = None
    #: The whole tool as given: a changed definition is listed anew.
    definition: str = ""

    @classmethod
    def from_tool(cls, tool: dict[str, Any]) -> McpServer:
        headers = dict(tool.get("headers") or {})
        if tool.get("authorization"):
            headers["Authorization"] = f"Bearer {tool['authorization']}"
        return cls(
            label=str(tool["server_label"]),
            url=tool.get("server_url"),
            connector_id=tool.get("connector_id"),
            tunnel_id=tool.get("tunnel_id"),
            headers=tuple(sorted(headers.items())),
            allowed_tools=tool.get("allowed_tools"),
            require_approval=tool.get("require_approval"),
            definition=json.dumps(tool, sort_keys=True),
        )

    def allows(self, tool: dict[str, Any]) -> bool:
        """``allowed_tools``: a list of names, or a filter (``tool_names``, ``read_only``); none allows all."""
        allowed = self.allowed_tools
        if allowed is None:
            return True
        if isinstance(allowed, list):
            return tool["name"] in allowed
        return _matches(allowed, tool)

    def needs_approval(self, tool: dict[str, Any]) -> bool:
        """``require_approval``: ``"always"`` (the default; OpenAI's MCP guide: approval is requested "before any
        data is shared with a connector or remote MCP server"), ``"never"``, or filters: tools matched by
        ``never`` run at once, all others are asked for."""
        rule = self.require_approval
        if rule is None or rule == "always":
            return True
        if rule == "never":
            return False
        never = rule.get("never")
        return not (isinstance(never, dict) and _matches(never, tool))


def _matches(rule: dict[str, Any], tool: dict[str, Any]) -> bool:
    names = rule.get("tool_names")
    if names is not None and tool["name"] not in names:
        return False
    read_only = rule.get("read_only")
    if read_only is not None:
        hint = (tool.get("annotations") or {}).get("readOnlyHint")
        return bool(hint) is bool(read_only)
    return True


class McpTools:
    """The MCP servers of one session: which definitions are in force, the tools each one listed (only what
    ``allowed_tools`` lets through) and the calls waiting for the client's approval. No I/O."""

    def __init__(self) -> None:
        self._servers: dict[str, McpServer] = {}
        self._tools: dict[str, list[dict[str, Any]]] = {}
        self._pending: dict[str, ToolCall] = {}

    def configure(self, tools: list[dict[str, Any]]) -> list[McpServer]:
        """Take the ``mcp`` tools of a session (or of one response); returns the servers to list: new labels
        and changed definitions. A tool with only a ``server_label`` reuses the definition given before."""
        to_list = []
        for tool in tools:
            if tool.get("type") != "mcp" or not tool.get("server_label"):
                continue
            label = str(tool["server_label"])
            if label in self._servers and not _defines(tool):
                continue
            server = McpServer.from_tool(tool)
            if self._servers.get(label) != server:
                self._servers[label] = server
                self._tools.pop(label, None)
                to_list.append(server)
        return to_list

    def listed(self, server: McpServer, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The server's listing arrived: keep (and return) what the session may call."""
        allowed = [t for t in tools if server.allows(t)]
        if self._servers.get(server.label) == server:
            self._tools[server.label] = allowed
        return allowed

    def forget(self, server: McpServer) -> None:
        """Its listing failed or was cancelled: the next configuration that names it lists it again."""
        if self._servers.get(server.label) == server:
            del self._servers[server.label]
            self._tools.pop(server.label, None)

    def callable(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The tools the model may call through the ``mcp`` entries of ``tools``: only those already listed
        (while a listing runs, its tools are not there yet)."""
        labels = [str(t["server_label"]) for t in tools if t.get("type") == "mcp" and t.get("server_label")]
        return [{**tool, "server_label": label} for label in labels for tool in self._tools.get(label, [])]

    def server(self, label: str) -> McpServer:
        return self._servers[label]

    def needs_approval(self, call: ToolCall) -> bool:
        assert call.server_label is not None
        server = self._servers[call.server_label]
        tool = next((t for t in self._tools.get(call.server_label, []) if t["name"] == call.name), {"name": call.name})
        return server.needs_approval(tool)

    def ask(self, call: ToolCall) -> str:
        """Hold ``call`` until the client answers; returns the ``mcp_approval_request`` item's id."""
        request_id = new_id("item")
        self._pending[request_id] = call
        return request_id

    def answered(self, response: dict[str, Any]) -> ToolCall | None:
        """An ``mcp_approval_response`` item: the held call if it was approved (each request is answered once)."""
        call = self._pending.pop(str(response.get("approval_request_id")), None)
        return call if call is not None and response.get("approve") is True else None


def _defines(tool: dict[str, Any]) -> bool:
    return any(tool.get(k) for k in ("server_url", "connector_id", "tunnel_id"))


# -- what the session sends ------------------------------------------------------------------------
class McpListing:
    """The listing of one server's tools, as the session reports it: its ``mcp_list_tools`` item is added, the
    listing runs (``mcp_list_tools.in_progress``), then ``completed`` or ``failed`` and the item is done, naming
    the tools imported (none when the listing failed)."""

    def __init__(self, label: str, previous_item_id: str | None) -> None:
        self.item: dict[str, Any] = {"id": new_id("item"), "type": "mcp_list_tools", "server_label": label, "tools": []}
        self.previous_item_id = previous_item_id

    def start(self) -> list[Event]:
        return [
            ("conversation.item.added", {"item": copy.deepcopy(self.item), "previous_item_id": self.previous_item_id}),
            ("mcp_list_tools.in_progress", {"item_id": self.item["id"]}),
        ]

    def completed(self, tools: list[dict[str, Any]]) -> list[Event]:
        self.item["tools"] = tools
        return [("mcp_list_tools.completed", {"item_id": self.item["id"]}), *self._done()]

    def failed(self) -> list[Event]:
        return [("mcp_list_tools.failed", {"item_id": self.item["id"]}), *self._done()]

    def _done(self) -> list[Event]:
        return [
            ("conversation.item.done", {"item": copy.deepcopy(self.item), "previous_item_id": self.previous_item_id})
        ]


class McpApprovalRequestOutput(OutputItem):
    """A response whose output is a question to the client: may this call run? (``mcp_approval_request``)."""

    def __init__(self, response_id: str, request_id: str, call: ToolCall, *, in_conversation: bool = True) -> None:
        item = {
            "id": request_id,
            "type": "mcp_approval_request",
            "server_label": call.server_label,
            "name": call.name,
            "arguments": call.arguments,
        }
        super().__init__(response_id, item, in_conversation=in_conversation, output_index=0)

    def close(self) -> list[Event]:
        self.closed = True
        return self._item_events("done") if self.opened else []


class McpCallOutput(OutputItem):
    """An ``mcp_call`` item: its arguments stream (``response.mcp_call_arguments.delta``/``done``), the call runs
    (``response.mcp_call.in_progress``) and ends ``completed`` with the server's output or ``failed`` with its
    error, both kept in the item."""

    def __init__(
        self,
        response_id: str,
        call: ToolCall,
        approval_request_id: str | None,
        *,
        in_conversation: bool = True,
        output_index: int = 0,
    ) -> None:
        item = {
            "id": new_id("item"),
            "type": "mcp_call",
            "server_label": call.server_label,
            "name": call.name,
            "arguments": "",
            "approval_request_id": approval_request_id,
            "output": None,
            "error": None,
        }
        super().__init__(response_id, item, in_conversation=in_conversation, output_index=output_index)
        self._ctx = {"item_id": item["id"], "output_index": output_index}

    @property
    def arguments(self) -> str:
        return str(self.item["arguments"])

    def arguments_delta(self, delta: str) -> list[Event]:
        self.item["arguments"] += delta
        return [("response.mcp_call_arguments.delta", {**self._ctx, "response_id": self.response_id, "delta": delta})]

    def arguments_done(self) -> list[Event]:
        done = {**self._ctx, "response_id": self.response_id, "arguments": self.arguments}
        return [("response.mcp_call_arguments.done", done), ("response.mcp_call.in_progress", dict(self._ctx))]

    def completed(self, output: str) -> list[Event]:
        self.item["output"] = output
        return [("response.mcp_call.completed", dict(self._ctx))]

    def failed(self, error: dict[str, Any]) -> list[Event]:
        self.item["error"] = error
        return [("response.mcp_call.failed", dict(self._ctx))]

    def close(self) -> list[Event]:
        if self.closed or not self.opened:
            self.closed = True
            return []
        self.closed = True
        return self._item_events("done")


def mcp_report(item: dict[str, Any], items: dict[str, dict[str, Any]]) -> str:
    """What the reply after an MCP step says: the call's output or error, or that the client said no."""
    if item["type"] == "mcp_call":
        where = f"The {item['name']} tool of {item['server_label']}"
        if item.get("error"):
            return f"{where} failed: {item['error'].get('message')}"
        return f"{where} returned {item.get('output')}"
    request = items.get(str(item.get("approval_request_id")), {})
    name = request.get("name", "MCP")
    if item.get("approve"):
        return f"The {name} tool call was approved."
    return f"The {name} tool call was not approved" + (f": {item['reason']}" if item.get("reason") else ".")


# -- the network side ------------------------------------------------------------------------------
async def list_tools(server: McpServer, timeout: float = MCP_TIMEOUT) -> list[dict[str, Any]]:
    """Every tool the server lists (all pages), in the ``mcp_list_tools`` item's shape; ``McpFailure`` if the
    server cannot be reached or refuses."""
    async with _connected(server, timeout) as client:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                annotations = (
                    tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None
                )
                tools.append(
                    {
                        "name": tool.name,
                        "description": tool.description,
                        "input_schema": tool.input_schema,
                        "annotations": annotations,
                    }
                )
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools


async def call_tool(server: McpServer, name: str, arguments: str, timeout: float = MCP_TIMEOUT) -> str:
    """Run one tool; returns its output as the ``mcp_call`` item carries it (the text of its content), or raises
    ``McpFailure`` (``tool_execution_error`` when the tool itself failed)."""
    async with _connected(server, timeout) as client:
        result = await client.call_tool(name, json.loads(arguments or "{}"))
    output = _output(result)
    if result.is_error:
        raise McpFailure({"type": "tool_execution_error", "message": output})
    return output


def _output(result: CallToolResult) -> str:
    parts = []
    for block in result.content:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else json.dumps(block.model_dump(mode="json", exclude_none=True)))
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content)
    return "\n".join(parts)


class _connected:
    """An MCP session with ``server`` for one operation, bounded by ``timeout``, every failure turned into
    ``McpFailure``: the HTTP status the server refused with, its JSON-RPC error, a timeout, or why it could not be
    reached. Cancellation (the response or the session ended) passes through."""

    def __init__(self, server: McpServer, timeout: float) -> None:
        self.server = server
        self.timeout = timeout
        self._deadline = asyncio.timeout(timeout)
        self._stack = AsyncExitStack()
        #: The answers to the client's POSTs (its requests), newest last.
        self._answers: list[httpx2.Response] = []

    async def _answered(self, response: httpx2.Response) -> None:
        if response.request.method == "POST":
            self._answers.append(response)

    async def __aenter__(self) -> Client:
        if self.server.url is None:
            raise _unreachable(self.server)
        try:
            await self._stack.enter_async_context(self._deadline)
            http = httpx2.AsyncClient(
                headers=dict(self.server.headers),
                timeout=httpx2.Timeout(self.timeout),
                event_hooks={"response": [self._answered]},
            )
            await self._stack.enter_async_context(http)
            return await self._stack.enter_async_context(
                Client(streamable_http_client(self.server.url, http_client=http))
            )
        except BaseException as exc:
            failure = self._failure(exc)
            try:
                await self._stack.aclose()
            except BaseException as closing:
                failure = failure or self._failure(closing)
            if failure is None:
                raise
            raise failure from None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        failure = self._failure(exc) if exc is not None else None
        try:
            await self._stack.__aexit__(exc_type, exc, tb)
        except BaseException as closing:
            failure = failure or self._failure(closing)
            if failure is None:
                raise
        if failure is not None:
            raise failure from None

    def _failure(self, exc: BaseException) -> McpFailure | None:
        leaves = list(_leaves(exc))
        for leaf in leaves:
            if isinstance(leaf, McpFailure):
                return leaf
        if self._deadline.expired() or any(isinstance(e, TimeoutError | httpx2.TimeoutException) for e in leaves):
            message = f"The MCP server did not answer within {self.timeout:g} s."
            return McpFailure({"type": "protocol_error", "code": REQUEST_TIMEOUT, "message": message})
        if any(isinstance(e, asyncio.CancelledError) for e in leaves):
            return None
        last = self._answers[-1] if self._answers else None
        if last is not None and last.status_code >= 400:
            message = f"{last.status_code} ({last.reason_phrase})"
            return McpFailure({"type": "http_error", "code": last.status_code, "message": message})
        for leaf in leaves:
            if isinstance(leaf, MCPError):
                return McpFailure({"type": "protocol_error", "code": leaf.code, "message": leaf.message})
        detail = str(leaves[0]) if leaves else ""
        message = f"Could not connect to the MCP server at {self.server.url}: {detail or type(exc).__name__}"
        return McpFailure({"type": "protocol_error", "code": CONNECTION_CLOSED, "message": message})


def _unreachable(server: McpServer) -> McpFailure:
    if server.connector_id or server.tunnel_id:
        what = f"connector '{server.connector_id}'" if server.connector_id else f"tunnel '{server.tunnel_id}'"
        message = f"The emulator cannot reach OpenAI's {what}: give the tool the server_url of an MCP server."
    else:
        message = f"MCP server '{server.label}' was never defined: it needs a server_url."
    return McpFailure({"type": "protocol_error", "code": CONNECTION_CLOSED, "message": message})


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
