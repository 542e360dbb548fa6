"""A static picture of one logical conversation across its physical sessions (``rtkit.conversation``)."""

from __future__ import annotations

from IPython.display import Image
from matplotlib.figure import Figure

from rtkit.conversation import Conversation, Turn
from rtkit.widgets.plots import _png

__all__ = ["ConversationTimeline"]

_LANES = {"user": 2, "assistant": 1, "tool": 0}
_COLOURS = ("#1e88e5", "#ef6c00", "#43a047", "#8e24aa", "#6d4c41")


def _lane(turn: Turn) -> str:
    return "tool" if turn.kind != "message" else "assistant" if turn.role == "assistant" else "user"


class ConversationTimeline:
    """Each turn on its speaker's lane, coloured by the session it happened in (hollow: a copy restored in a later
    session); shaded spans are the physical sessions, dashed lines the resumptions and what each carried over."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation

    def figure(self) -> Figure:
        conversation = self.conversation
        fig = Figure(figsize=(9, 3))
        ax = fig.subplots()
        if not conversation.sessions:
            ax.set_title("No session yet")
            return fig
        start = conversation.sessions[0].started_at
        moments = [t.at for t in conversation.turns] + [r.at for r in conversation.resumptions]
        moments += [s.ended_at or s.started_at for s in conversation.sessions]
        end = max(moments) + 1.0
        colours = {s.id: _COLOURS[n % len(_COLOURS)] for n, s in enumerate(conversation.sessions)}
        for session in conversation.sessions:
            until = session.ended_at or end
            ax.axvspan(session.started_at - start, until - start, color=colours[session.id], alpha=0.08)
            ax.text(session.started_at - start, 2.45, f" {session.id[:12]}…", fontsize=7, color=colours[session.id])
        arrived = {r.new_session: r.at for r in conversation.resumptions}
        on_lane = dict.fromkeys(_LANES, 0)
        for turn in conversation.turns:
            lane = _lane(turn)
            x, y, on_lane[lane] = turn.at - start, _LANES[lane], on_lane[lane] + 1
            ax.scatter([x], [y], color=colours.get(turn.session_id, "grey"), s=60, zorder=3)
            text = turn.text or turn.name or turn.output or ""
            label = f"{turn.id.removeprefix('turn_')}: {text[:12]}{'…' if len(text) > 12 else ''}"
            below = on_lane[lane] % 2
            ax.annotate(label, (x, y), xytext=(5, -12 if below else 6), textcoords="offset points", fontsize=7)
            for session_id in turn.item_ids:
                if session_id != turn.session_id and session_id in arrived:  # a restored copy, hollow
                    ax.scatter(
                        [arrived[session_id] - start],
                        [y],
                        s=60,
                        facecolors="none",
                        zorder=3,
                        edgecolors=colours.get(session_id, "grey"),
                    )
        for record in conversation.resumptions:
            ax.axvline(record.at - start, color="black", linestyle="--", linewidth=1)
            ax.text(
                record.at - start, -0.45, f"{record.reason}: {record.items_restored} restored ", fontsize=7, ha="right"
            )
        ax.set_xlim(-0.3, end - start)
        ax.set_yticks(list(_LANES.values()), list(_LANES))
        ax.set_ylim(-0.6, 2.7)
        ax.set_xlabel("seconds since the call started")
        ax.set_ylabel("speaker")
        ax.set_title(f"One conversation, {len(conversation.sessions)} physical sessions")
        fig.tight_layout()
        return fig

    def snapshot(self) -> Image:
        """A static PNG: display it and it stays in the saved notebook."""
        return Image(_png(self.figure()))
