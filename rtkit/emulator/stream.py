"""One output item of a response, as the service streams it: announced, filled, then closed.

Whatever ends a response (its end, ``response.cancel``, a barge-in, ``max_output_tokens``), closing its
output leaves a well-formed sequence: no ``*.done`` for what was never announced, and one for everything that
was (``content_part.done``, ``output_audio.done``/``output_audio_transcript.done`` or ``output_text.done``,
``output_item.done``, ``conversation.item.done``). The classes return events as ``(type, fields)`` pairs and
do no I/O; the engine sends them.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from rtkit._ids import new_id

__all__ = ["Event", "FunctionCallOutput", "MessageOutput"]

Event = tuple[str, dict[str, Any]]
Status = Literal["completed", "incomplete"]


class OutputItem:
    """One item of a response's output, and the events it owes the client: what was announced gets closed."""

    def __init__(self, response_id: str, item: dict[str, Any], *, in_conversation: bool, output_index: int) -> None:
        self.item = item
        self.response_id = response_id
        self.in_conversation = in_conversation
        self.output_index = output_index
        self.previous_item_id: str | None = None
        #: ``response.output_item.added`` was sent: from then on the item must be closed.
        self.opened = False
        self.closed = False

    @property
    def id(self) -> str:
        return str(self.item["id"])

    def _item_events(self, kind: Literal["added", "done"]) -> list[Event]:
        events: list[Event] = [
            (
                f"response.output_item.{kind}",
                {"response_id": self.response_id, "output_index": self.output_index, "item": copy.deepcopy(self.item)},
            )
        ]
        if self.in_conversation:
            events.append(
                (
                    f"conversation.item.{kind}",
                    {"item": copy.deepcopy(self.item), "previous_item_id": self.previous_item_id},
                )
            )
        return events

    def open(self, previous_item_id: str | None) -> list[Event]:
        self.opened = True
        self.previous_item_id = previous_item_id
        return self._item_events("added")


class MessageOutput(OutputItem):
    """An assistant message with one content part: audio with its transcript, or text."""

    def __init__(self, response_id: str, *, audio: bool, in_conversation: bool = True, output_index: int = 0) -> None:
        item = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        super().__init__(response_id, item, in_conversation=in_conversation, output_index=output_index)
        self.audio = audio
        #: The transcript of the audio so far, or the text so far.
        self.text = ""
        #: Audio sent so far, in ms of the output stream.
        self.audio_ms = 0
        self._ctx = {"response_id": response_id, "item_id": item["id"], "output_index": output_index}

    def open(self, previous_item_id: str | None) -> list[Event]:
        part = {"type": "audio", "transcript": ""} if self.audio else {"type": "text", "text": ""}
        events = [*super().open(previous_item_id), ("response.content_part.added", {**self._part_ctx(), "part": part})]
        # From here the item holds its part as it grows (a retrieve or a truncate may come mid-stream).
        self.item["content"] = [
            {"type": "output_audio", "transcript": ""} if self.audio else {"type": "output_text", "text": ""}
        ]
        return events

    def _part_ctx(self) -> dict[str, Any]:
        return {**self._ctx, "content_index": 0}

    def _transcript_deleted(self) -> bool:
        """A truncate deleted the transcript: it stays deleted, whatever the response says next."""
        return bool(self.item["content"]) and self.item["content"][0].get("transcript", "") is None

    def audio_delta(self, delta: str | None, ms: int, transcript: str) -> list[Event]:
        """``ms`` of audio (``delta``: base64 in the output format; None over WebRTC, where it rides the
        track) and the words it says."""
        events: list[Event] = []
        self.audio_ms += ms
        if delta is not None:
            events.append(("response.output_audio.delta", {**self._part_ctx(), "delta": delta}))
        if transcript:
            self.text += transcript
            if not self._transcript_deleted():
                self.item["content"][0]["transcript"] = self.text
            events.append(("response.output_audio_transcript.delta", {**self._part_ctx(), "delta": transcript}))
        return events

    def text_delta(self, delta: str) -> list[Event]:
        if not delta:
            return []
        self.text += delta
        self.item["content"][0]["text"] = self.text
        return [("response.output_text.delta", {**self._part_ctx(), "delta": delta})]

    def close(self, status: Status, *, transcript_deleted: bool = False) -> list[Event]:
        """The ``*.done`` events of what was announced; the item keeps no transcript once truncated."""
        if self.closed or not self.opened:
            self.closed = True
            return []
        self.closed = True
        ctx = self._part_ctx()
        if self.audio:
            events: list[Event] = [
                ("response.output_audio.done", dict(ctx)),
                ("response.output_audio_transcript.done", {**ctx, "transcript": self.text}),
                ("response.content_part.done", {**ctx, "part": {"type": "audio", "transcript": self.text}}),
            ]
            deleted = transcript_deleted or self._transcript_deleted()
            self.item["content"] = [{"type": "output_audio", "transcript": None if deleted else self.text}]
        else:
            events = [
                ("response.output_text.done", {**ctx, "text": self.text}),
                ("response.content_part.done", {**ctx, "part": {"type": "text", "text": self.text}}),
            ]
            self.item["content"] = [{"type": "output_text", "text": self.text}]
        self.item["status"] = status
        return events + self._item_events("done")


class FunctionCallOutput(OutputItem):
    """A function call whose arguments stream as deltas. Only a call that completed gets
    ``response.function_call_arguments.done``: clients run the function on that event, and a cut call's
    arguments are not a call to run (its ``output_item.done`` says ``incomplete``)."""

    def __init__(self, response_id: str, name: str, *, in_conversation: bool = True, output_index: int = 0) -> None:
        item = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": new_id("call"),
            "arguments": "",
        }
        super().__init__(response_id, item, in_conversation=in_conversation, output_index=output_index)
        self._ctx = {
            "response_id": response_id,
            "item_id": item["id"],
            "output_index": output_index,
            "call_id": item["call_id"],
        }

    @property
    def arguments(self) -> str:
        return str(self.item["arguments"])

    def arguments_delta(self, delta: str) -> list[Event]:
        if not delta:
            return []
        self.item["arguments"] += delta
        return [("response.function_call_arguments.delta", {**self._ctx, "delta": delta})]

    def close(self, status: Status) -> list[Event]:
        if self.closed or not self.opened:
            self.closed = True
            return []
        self.closed = True
        events: list[Event] = []
        if status == "completed":
            events.append(
                (
                    "response.function_call_arguments.done",
                    {**self._ctx, "name": self.item["name"], "arguments": self.arguments},
                )
            )
        self.item["status"] = status
        return events + self._item_events("done")
