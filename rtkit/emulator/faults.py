"""Faults the operator can inject, for teaching the classic failures and for testing clients.

Everything here is plain state: the routes read the key faults, and the ``Switchboard`` (``hosts.py``)
applies every fault that touches calls, whichever process carries them. The CLI, the Python API and the
admin endpoint all change the same ``Faults`` object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rtkit.emulator import errors
from rtkit.emulator.errors import ApiError

Endpoint = Literal["client_secrets", "calls", "websocket"]


@dataclass
class _Planned:
    remaining: int
    status: int
    retry_after: float
    quota: bool = False


@dataclass
class Faults:
    """The emulator's fault plan. Counts are consumed one request at a time."""

    mint_failures: _Planned | None = None
    call_failures: _Planned | None = None
    key_ttl_override: int | None = None
    latency: dict[str, float] = field(default_factory=dict)
    drop_calls_after: float | None = None
    #: Answer calls, then let no media through, like a firewall that drops UDP: the client's ICE never
    #: completes, which is how "WebRTC unavailable" looks from the client.
    block_media: bool = False
    #: An ephemeral key opens one session (a call or a WebSocket); its second use is a 401, as a service that
    #: spends client secrets on use would answer. Sideband joins and hangups are not new sessions.
    single_use_keys: bool = False
    #: The next N minted keys arrive already dead (expired in the store while the client still believes their
    #: ``expires_at``): the key that "expired on its way", the client's one-fresh-key path.
    keys_dead_on_arrival: int = 0

    def fail_next_mints(
        self, count: int = 1, *, status: int = 429, retry_after: float = 1.0, quota: bool = False
    ) -> None:
        """The next ``count`` ``client_secrets`` calls fail with ``status`` (429, 500 or 503); ``quota`` makes
        the 429 the account's exhausted quota rather than a rate limit."""
        self.mint_failures = _Planned(count, status, retry_after, quota) if count > 0 else None

    def reject_next_calls(self, count: int = 1, *, status: int = 503, retry_after: float = 1.0) -> None:
        """The next ``count`` ``POST /calls`` (and WebSocket opens) fail with ``status``."""
        self.call_failures = _Planned(count, status, retry_after) if count > 0 else None

    def add_latency(self, endpoint: Endpoint, seconds: float) -> None:
        if seconds > 0:
            self.latency[endpoint] = seconds
        else:
            self.latency.pop(endpoint, None)

    def clear(self) -> None:
        self.mint_failures = self.call_failures = None
        self.key_ttl_override = self.drop_calls_after = None
        self.block_media = self.single_use_keys = False
        self.keys_dead_on_arrival = 0
        self.latency.clear()

    def take_dead_on_arrival(self) -> bool:
        """Whether the key being minted now is to arrive dead (one of the next ``keys_dead_on_arrival``)."""
        if self.keys_dead_on_arrival <= 0:
            return False
        self.keys_dead_on_arrival -= 1
        return True

    def take_mint_failure(self) -> ApiError | None:
        return self._take("mint_failures")

    def take_call_failure(self) -> ApiError | None:
        return self._take("call_failures")

    def _take(self, name: str) -> ApiError | None:
        planned: _Planned | None = getattr(self, name)
        if planned is None:
            return None
        planned.remaining -= 1
        if planned.remaining <= 0:
            setattr(self, name, None)
        if planned.status == 429:
            return errors.insufficient_quota() if planned.quota else errors.rate_limited(planned.retry_after)
        if planned.status in (502, 503):
            err = errors.overloaded(planned.status)
        else:
            err = errors.server_error()
            err.status = planned.status
        err.headers = {"Retry-After": f"{planned.retry_after:g}"}
        return err

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


class _PlannedFailure(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    count: int = Field(1, ge=0, le=10_000)
    status: Literal[429, 500, 502, 503] = 429
    retry_after: float = Field(1.0, ge=0, le=3600)
    quota: bool = False


class FaultRequest(BaseModel):
    """Body of ``POST /_rtkit/faults``: each field present changes that part of the plan. Numbers must be
    finite and bounded: a fault applied from ``1e999`` once made every later read of the plan fail."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    fail_mints: _PlannedFailure | None = None
    reject_calls: _PlannedFailure | None = None
    key_ttl_seconds: int | None = Field(None, ge=1, le=7200)
    latency: dict[Endpoint, Annotated[float, Field(ge=0, le=3600)]] | None = None
    drop_calls_after: float | None = Field(None, ge=0, le=86_400)
    block_media: bool | None = None
    single_use_keys: bool | None = Field(None, strict=True)
    keys_dead_on_arrival: int | None = Field(None, ge=0, le=10_000, strict=True)
    clear: bool = False

    def apply(self, faults: Faults) -> None:
        if self.clear:
            faults.clear()
        fields = self.model_fields_set
        if self.fail_mints is not None:
            faults.fail_next_mints(
                self.fail_mints.count,
                status=self.fail_mints.status,
                retry_after=self.fail_mints.retry_after,
                quota=self.fail_mints.quota,
            )
        if self.reject_calls is not None:
            faults.reject_next_calls(
                self.reject_calls.count,
                status=self.reject_calls.status,
                retry_after=self.reject_calls.retry_after,
            )
        if "key_ttl_seconds" in fields:
            faults.key_ttl_override = self.key_ttl_seconds
        if self.latency is not None:
            for endpoint, seconds in self.latency.items():
                faults.add_latency(endpoint, seconds)
        if "drop_calls_after" in fields:
            faults.drop_calls_after = self.drop_calls_after
        if self.block_media is not None:
            faults.block_media = self.block_media
        if self.single_use_keys is not None:
            faults.single_use_keys = self.single_use_keys
        if self.keys_dead_on_arrival is not None:
            faults.keys_dead_on_arrival = self.keys_dead_on_arrival
