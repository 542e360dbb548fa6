"""The conversation as a transcript that writes itself while the call goes on.

It reads ``call.conversation`` (one history across physical sessions, ``rtkit.conversation``), so what it
shows is what rtkit knows: each turn in order with its speaker, its text or the transcript of its audio as it
streams, where a reply was cut and what was heard of it, function calls and their outputs, the resumptions,
and the tokens and dollars so far. Saved, it keeps its last state as plain HTML (``StaticCopy``).
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

import ipywidgets as widgets

from rtkit.call import LiveCall
from rtkit.conversation import Turn
from rtkit.cost import PRICES, PriceTable
from rtkit.widgets._ui import ShowsStaticCopy, StaticCopy

__all__ = ["Transcript"]

#: Events after which the transcript may read differently (transcript deltas included: it streams).
_CHANGES = (
    "session.created",
    "conversation.item.",
    "response.output_audio_transcript.",
    "response.output_text.",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.done",
    "rtkit.resumed",
)
#: At most this often (seconds): a reply's transcript deltas arrive ten or more a second.
_REDRAW_S = 0.15
_SPEAKERS = {"user": ("you", "#1e88e5"), "assistant": ("model", "#ef6c00"), "system": ("system", "#6d4c41")}


class Transcript(ShowsStaticCopy, widgets.HTML):
    """``Transcript(call)``: the call's conversation, live. ``prices`` prices its usage line."""

    def __init__(self, call: LiveCall, *, prices: PriceTable = PRICES, max_turns: int = 200) -> None:
        super().__init__()
        self.call = call
        self.prices = prices
        self.max_turns = max_turns
        self._pending: asyncio.TimerHandle | None = None
        self._unsubscribe = call.events.on(self._on_event)
        self._copy = StaticCopy(self, lambda: {"text/html": self.value})
        self.redraw()

    def _on_event(self, event: dict[str, Any]) -> None:
        if not str(event.get("type", "")).startswith(_CHANGES) or self._pending is not None:
            return
        try:
            self._pending = asyncio.get_running_loop().call_later(_REDRAW_S, self.redraw)
        except RuntimeError:  # fed outside a loop (a test replaying events): draw now
            self.redraw()

    def redraw(self) -> None:
        self._pending = None
        self.value = self.html()

    def html(self) -> str:
        """The transcript as it stands, as plain HTML."""
        conversation = self.call.conversation
        if not conversation.sessions:
            return "<div class='rtkit-transcript rtkit-static'><i>No conversation yet: connect the call.</i></div>"
        start = conversation.sessions[0].started_at
        moves = sorted(conversation.resumptions, key=lambda r: r.at)
        rows: list[str] = []
        turns = conversation.turns[-self.max_turns :]
        if len(conversation.turns) > len(turns):
            rows.append(f"<div><i>… {len(conversation.turns) - len(turns)} earlier turns</i></div>")
        for turn in turns:
            while moves and moves[0].at <= turn.at:
                move = moves.pop(0)
                rows.append(
                    f"<div style='color:#888'>— {html.escape(move.reason)}: a new session, "
                    f"{move.items_restored} items restored —</div>"
                )
            rows.append(_row(turn, turn.at - start))
        try:
            cost = f" · ${conversation.cost(self.prices).total:.4f}"
        except KeyError:
            cost = ""
        usage = conversation.usage
        rows.append(
            f"<div style='color:#888;margin-top:4px'>{len(conversation.billed)} responses · "
            f"{usage.input_tokens:,} tokens in ({usage.cached_tokens:,} cached), {usage.output_tokens:,} out"
            f"{cost}</div>"
        )
        style = "font-size:13px;line-height:1.5"
        return f"<div class='rtkit-transcript rtkit-static' style='{style}'>" + "".join(rows) + "</div>"

    def close(self) -> None:
        self._unsubscribe()
        if self._pending is not None:
            self._pending.cancel()
        self._copy.forget()
        super().close()


def _row(turn: Turn, at: float) -> str:
    when = f"<span style='color:#888;font-family:monospace'>{at:6.1f}s</span> "
    if turn.kind == "function_call":
        call = html.escape(f"{turn.name}({turn.arguments or ''})")
        return f"<div>{when}<b>model calls</b> <code>{call}</code></div>"
    if turn.kind == "function_call_output":
        return f"<div>{when}<b>function returns</b> <code>{html.escape(str(turn.output))}</code></div>"
    who, colour = _SPEAKERS.get(turn.role or "", ("?", "#000"))
    text = html.escape(turn.text) if turn.text else "<i>…</i>"
    spoken = " 🔊" if turn.spoken else ""
    row = f"<div>{when}<b style='color:{colour}'>{who}</b>{spoken}: {text}"
    if turn.truncated_ms is not None:
        of = f" of {turn.audio_ms} ms" if turn.audio_ms else ""
        heard = html.escape(turn.heard_text or "")
        row += f"<br><span style='color:#c62828'>✂ cut at {turn.truncated_ms} ms{of}; heard: “{heard}”</span>"
    elif turn.interrupted:
        row += " <span style='color:#c62828'>(cancelled)</span>"
    return row + "</div>"
