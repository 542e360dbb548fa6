"""The Realtime API's own error shape, ``{"error": {message, type, param, code}}``.

One exception, ``ApiError``, serves both wire forms: an HTTP response on the REST routes and an
``error`` server event (naming the offending client ``event_id``) on a live connection.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class ApiError(Exception):
    """An error the real service would return, with its exact ``type``/``code``/``message``/``param``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.body()}, status_code=self.status, headers=self.headers)


def invalid_api_key(key: str | None) -> ApiError:
    if not key:
        return ApiError(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            status=401,
            code=None,
        )
    shown = f"{key[:3]}{'*' * 4}{key[-4:]}" if len(key) > 10 else "****"
    return ApiError(
        f"Incorrect API key provided: {shown}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        status=401,
        code="invalid_api_key",
    )


def expired_client_secret() -> ApiError:
    return ApiError(
        "The ephemeral client secret has expired. Create a new one with POST /v1/realtime/client_secrets.",
        status=401,
        code="invalid_api_key",
    )


def server_error(session_id: str | None = None) -> ApiError:
    ref = f" (include session ID in your message: {session_id})" if session_id else ""
    return ApiError(
        "The server had an error while processing your request. Sorry about that! You can retry your request, "
        f"or contact us through our help center at help.openai.com if the error persists.{ref}. "
        "We recommend you retry your request.",
        status=500,
        type="server_error",
        code="server_error",
    )


def rate_limited(retry_after: float) -> ApiError:
    return ApiError(
        "Rate limit reached for requests. Please try again later.",
        status=429,
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": f"{max(retry_after, 0):g}"},
    )


def insufficient_quota() -> ApiError:
    return ApiError(
        "You exceeded your current quota, please check your plan and billing details.",
        status=429,
        type="insufficient_quota",
        code="insufficient_quota",
    )


def overloaded(status: int = 503) -> ApiError:
    return ApiError(
        "The engine is currently overloaded, please try again later.",
        status=status,
        type="server_error",
        code="server_overloaded" if status == 503 else "server_error",
    )


def request_too_large(limit: int) -> ApiError:
    return ApiError(
        f"Request too large: the body is larger than {limit} bytes.",
        status=413,
        code="request_too_large",
    )
