"""A call's report: what happened and what it cost, in one object a notebook shows and a file keeps.

The call already measures everything (``call.metrics``: connections, turns, barge-ins, resumptions, errors;
``call.conversation``: turns, physical sessions, every response's usage). The report gathers them once, at
the moment it is made, with headline numbers a workshop ends on, an HTML summary for the notebook (plain
HTML, so it reads in a saved notebook and on GitHub too), and JSON for the file beside a recording.
"""

from __future__ import annotations

import html
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rtkit.conversation import Conversation
from rtkit.cost import PRICES, Cost, PriceTable, Usage
from rtkit.metrics import SessionMetrics

__all__ = ["SessionReport"]


class _Measured(Protocol):
    """What a report reads from a call (either kind)."""

    metrics: SessionMetrics
    conversation: Conversation

    @property
    def transport_name(self) -> str | None: ...


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


@dataclass
class SessionReport:
    """Everything a call measured, as plain data: ``SessionReport.of(call)``."""

    made_at: float
    transport: str | None
    sessions: list[dict[str, Any]]
    connects: list[dict[str, Any]]
    turns: list[dict[str, Any]]
    barge_ins: list[dict[str, Any]]
    resumptions: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    conversation: list[dict[str, Any]]
    usage: Usage
    cost: Cost
    prices: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, call: _Measured, prices: PriceTable = PRICES) -> SessionReport:
        metrics, conversation = call.metrics, call.conversation
        rows = metrics.to_records()
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_kind.setdefault(row["kind"], []).append(row)
        try:
            cost = conversation.cost(prices)
            priced = {"read_on": prices.read_on.isoformat(), "source": prices.source}
        except KeyError as err:  # a model the table does not know: say so, price nothing
            cost, priced = Cost(), {"error": str(err.args[0])}
        return cls(
            made_at=time.time(),
            transport=call.transport_name,
            sessions=[asdict(s) for s in conversation.sessions],
            connects=by_kind.get("connect", []),
            turns=by_kind.get("turn", []),
            barge_ins=by_kind.get("barge_in", []),
            resumptions=by_kind.get("resume", []),
            errors=by_kind.get("error", []),
            conversation=conversation.to_records(),
            usage=conversation.usage,
            cost=cost,
            prices=priced,
        )

    # -- the numbers a room asks for --------------------------------------------------------
    def headline(self) -> dict[str, Any]:
        """Connect time, reply latency, counts, tokens and dollars: one flat dict."""
        connected = [c["total_ms"] for c in self.connects if c.get("ok") and c.get("total_ms") is not None]
        latency = [t["first_audio_ms"] for t in self.turns if t.get("first_audio_ms") is not None]
        return {
            "transport": self.transport,
            "physical_sessions": len(self.sessions),
            "connections": len(self.connects),
            "failed_connections": sum(not c.get("ok") for c in self.connects),
            "connect_ms": _median(connected),
            "turns": len(self.conversation),
            "replies_timed": len(latency),
            "reply_latency_ms_median": _median(latency),
            "reply_latency_ms_max": round(max(latency), 1) if latency else None,
            "interrupted": sum(bool(t.get("interrupted")) for t in self.conversation),
            "resumptions": len(self.resumptions),
            "errors": len(self.errors),
            "input_tokens": self.usage.input_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_usd": round(self.cost.total, 6),
        }

    # -- keeping it ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "headline": self.headline(), "cost_total_usd": self.cost.total}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON (``.json`` is added when the name has no suffix); returns the path."""
        target = Path(path)
        if not target.suffix:
            target = target.with_suffix(".json")
        target.write_text(self.to_json())
        return target

    # -- showing it ---------------------------------------------------------------------------
    def _rows(self) -> list[tuple[str, str]]:
        h = self.headline()

        def ms(value: Any) -> str:
            return "–" if value is None else f"{value:,.0f} ms"

        cost = f"${self.cost.total:.4f}"
        if "read_on" in self.prices:
            cost += f" (prices of {self.prices['read_on']})"
        elif "error" in self.prices:
            cost = f"not priced: {self.prices['error']}"
        return [
            ("transport", str(h["transport"] or "–")),
            ("connections", f"{h['connections']} ({h['failed_connections']} failed), median {ms(h['connect_ms'])}"),
            ("physical sessions", f"{h['physical_sessions']} ({h['resumptions']} resumptions)"),
            ("turns", f"{h['turns']} ({h['interrupted']} interrupted)"),
            (
                "end of speech → first reply audio",
                f"median {ms(h['reply_latency_ms_median'])}, max {ms(h['reply_latency_ms_max'])}"
                f" over {h['replies_timed']} replies",
            ),
            ("errors", ", ".join(sorted({str(e.get("code")) for e in self.errors})) or "none"),
            (
                "tokens",
                f"{h['input_tokens']:,} in ({h['cached_tokens']:,} cached), {h['output_tokens']:,} out",
            ),
            ("cost", cost),
        ]

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self._rows()
        )
        return (
            f"<table class='rtkit-report'><caption style='text-align:left'><b>Call report</b></caption>{cells}</table>"
        )

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self._rows())
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self._rows())
