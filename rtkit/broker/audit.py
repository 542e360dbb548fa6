"""One JSON line per request on the ``rtkit.broker.audit`` logger. Keys appear only as fingerprints."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

audit_log = logging.getLogger("rtkit.broker.audit")


@dataclass
class AuditRecord:
    requestId: str
    ip: str
    userAgent: str
    method: str
    path: str
    status: int = 0
    outcome: str = "ok"
    caller: str | None = None
    sessionId: str | None = None
    cacheHit: bool | None = None
    upstreamMs: float | None = None
    key: str | None = None
    realtimeSessionId: str | None = None
    #: A key the client reported refused by the API (fingerprint), and whether it was the cached one.
    refusedKey: str | None = None
    evicted: bool | None = None
    durationMs: float = 0.0

    def emit(self) -> None:
        if audit_log.isEnabledFor(logging.INFO):
            # vars(), not dataclasses.asdict(): the fields are flat, and asdict deep-copies (~12% of a request).
            audit_log.info(json.dumps({"ts": round(time.time(), 3), "event": "broker.request", **vars(self)}))


class JsonLineFormatter(logging.Formatter):
    """Audit lines are already JSON; other records become ``{"ts", "level", "logger", "message"}``."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == audit_log.name:
            return record.getMessage()
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)
