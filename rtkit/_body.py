"""Reading a request body with a size cap and a time limit, for the broker and the emulator alike.

``await request.body()`` reads whatever a client sends, however large and however slowly: 20 MB of
instructions sat in memory, and a client trickling its body held the connection for as long as it
liked. Both servers read through ``read_body`` and turn its two errors into their own error shapes.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

__all__ = ["BODY_TIMEOUT", "BodyTimeout", "BodyTooLarge", "read_body"]

#: Seconds a client has to send its whole body once its headers are in.
BODY_TIMEOUT = 10.0


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than {limit} bytes.")
        self.limit = limit


class BodyTimeout(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"The request body did not arrive within {seconds:g} s.")
        self.seconds = seconds


async def read_body(request: Request, *, max_bytes: int, timeout: float = BODY_TIMEOUT) -> bytes:
    """The body, refused as soon as it is known to be too large (declared or counted) or too slow."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(max_bytes)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_bytes:
                    raise BodyTooLarge(max_bytes)
    except TimeoutError:
        raise BodyTimeout(timeout) from None
    return bytes(body)
