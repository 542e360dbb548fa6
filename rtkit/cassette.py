"""Cassettes: a conversation recorded once (or written by hand) and replayed offline by the emulator.

A cassette is one JSON file (format version 1)::

    {"rtkit_cassette": 1,
     "meta": {"transport": "websocket", "model": "gpt-realtime", ...},
     "turns": [{"say": "Hello! Ask me about the weather."},
               {"call": "get_weather", "arguments": {"city": "Paris"}},
               {"say": "It is 21 degrees in Paris.",
                "audio": {"format": "pcm16", "rate": 24000, "data": "<base64>"},
                "usage": {...}, "delay_ms": 310}],
     "events": [{"t": 0.012, "event": {"type": "session.created", ...}}, ...]}

``turns`` are the model's replies, one per response, in order: what the emulator replays (``Emulator(cassette=
path)``). A turn says something (``say``, with its recorded ``audio`` if there is any, else the emulator voices
the text) or calls a function (``call`` and its ``arguments``). ``usage`` is replayed as ``response.done``'s usage;
``delay_ms`` is the recorded wait from ``response.created`` to the first output. ``events`` are every event the
call received, ``t`` seconds after recording began, for ``diff``. The deltas' content is left out and replaced
by its length, ``rtkit_delta_bytes`` (audio) or ``rtkit_delta_chars``: the turns hold the audio once, each
``.done`` event has the whole text, and a key spoken across two text deltas could not be scrubbed. Audio is
inline base64 PCM16 at 24 kHz: one file a teacher hands out or a test commits, about 64 kB per second of reply.

``record(call)`` records a ``RealtimeSession`` or a ``BrowserCall`` from its ``events``. Over WebSocket the
reply audio arrives in those events and is kept exactly. Over WebRTC it rides the media track: the recorder
puts a tap in front of a ``RealtimeSession``'s sink (or in place of none) and keeps what the track delivered
from ``output_audio_buffer.started`` until ``stopped`` (Opus-decoded, its silent edges trimmed). A
``BrowserCall`` plays in the page: its turns hold the transcript, and the replay voices it. The user's audio is
what a ``RealtimeSession``'s source gave the transport (``user_audio``, at 24 kHz, from the first frame sent;
the VAD events' ``audio_start_ms`` and ``audio_end_ms`` place each utterance in it on the first connection); a
``BrowserCall``'s microphone stays in the page, and what its user said is in ``events`` as items and
transcripts. Every key and secret is scrubbed on save (``scrub``), and ``scan`` finds any left.
"""

from __future__ import annotations

import base64
import copy
import difflib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rtkit.audio.formats import WireFormat
from rtkit.audio.media import resample
from rtkit.audio.pcm import PCM, REALTIME_RATE
from rtkit.audio.tap import SinkTap, SourceTap
from rtkit.errors import ConfigurationError
from rtkit.events import Broadcast

__all__ = [
    "Cassette",
    "CassetteAudio",
    "CassetteEvent",
    "CassetteTurn",
    "Difference",
    "Finding",
    "Recorder",
    "diff",
    "event_types",
    "load",
    "record",
    "scan",
    "scrub",
]

VERSION: Literal[1] = 1
#: What a scrubbed secret reads as.
SCRUBBED = "[scrubbed]"
#: Fields whose value is a secret whatever it looks like (compared lowercased).
SECRET_FIELDS = frozenset({"authorization", "client_secret", "api_key", "openai_api_key", "x-api-key", "password"})
#: Main keys (``sk-...``), ephemeral keys (``ek_...``) and bearer credentials, wherever they appear in text.
SECRET_PATTERN = re.compile(r"\b(?:sk-[A-Za-z0-9_\-]{6,}|ek_[A-Za-z0-9_\-]{6,})|(?i:bearer\s+)[A-Za-z0-9._~+/\-]{6,}=*")


# -- the file ------------------------------------------------------------------------------------------------
class CassetteAudio(BaseModel):
    """A turn's reply audio: little-endian mono PCM16 at 24 kHz, base64."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["pcm16"] = "pcm16"
    rate: Literal[24000] = 24000
    data: str

    @classmethod
    def of(cls, pcm: PCM) -> CassetteAudio:
        return cls(data=base64.b64encode(pcm.astype("<i2").tobytes()).decode())

    def pcm(self) -> PCM:
        return np.frombuffer(base64.b64decode(self.data), dtype="<i2").astype(np.int16)


class CassetteTurn(BaseModel):
    """One reply of the model: it says ``say`` or calls ``call`` with ``arguments`` (never both)."""

    model_config = ConfigDict(extra="forbid")

    say: str | None = None
    call: str | None = None
    #: An object, or the JSON text exactly as the model streamed it.
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    audio: CassetteAudio | None = None
    usage: dict[str, Any] | None = None
    delay_ms: float = Field(0.0, ge=0)
    #: The recorded response's status (``completed``, ``cancelled``, ...): for reading, not replayed.
    status: str | None = None

    @model_validator(mode="after")
    def _one_thing(self) -> CassetteTurn:
        if (self.say is None) == (self.call is None):
            raise ValueError('a turn either says something ({"say": "..."}) or calls a function ({"call": "name"})')
        if self.usage is not None and not isinstance(self.usage.get("total_tokens"), int):
            raise ValueError("a turn's usage is response.done's usage object, with total_tokens")
        return self

    @property
    def arguments_json(self) -> str:
        """The arguments as ``response.function_call_arguments.done`` carries them."""
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


class CassetteEvent(BaseModel):
    """One event the recorded call received, ``t`` seconds after recording began."""

    model_config = ConfigDict(extra="forbid")

    t: float
    event: dict[str, Any]


class Cassette(BaseModel):
    """A recorded (or hand-written) conversation: the model's turns, and the events as received."""

    model_config = ConfigDict(extra="forbid")

    rtkit_cassette: Literal[1] = VERSION
    meta: dict[str, Any] = Field(default_factory=dict)
    turns: list[CassetteTurn] = Field(default_factory=list)
    events: list[CassetteEvent] = Field(default_factory=list)
    #: The user's audio as the client sent it (a ``RealtimeSession`` with a source), silence included.
    user_audio: CassetteAudio | None = None

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Cassette:
        """Read a cassette; a file that is not one raises ``ConfigurationError`` saying what is wrong where."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"Cannot read the cassette {path}: {exc}") from None
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()[:5])
            raise ConfigurationError(
                f"{path} is not a valid rtkit cassette (version {VERSION}): {problems}",
                hint='a cassette is {"rtkit_cassette": 1, "turns": [{"say": "..."}, ...]}',
            ) from None

    def save(self, path: str | PathLike[str]) -> Path:
        """Write it (scrubbed once more: a hand-edited cassette may have gained a key) and return the path."""
        path = Path(path)
        path.write_text(json.dumps(scrub(self.model_dump(mode="json", exclude_none=True)), indent=1) + "\n")
        return path


def load(path: str | PathLike[str]) -> Cassette:
    """``Cassette.load``."""
    return Cassette.load(path)


# -- secrets -------------------------------------------------------------------------------------------------
def scrub(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` (JSON-like) with every secret replaced by ``[scrubbed]``: the fields in ``SECRET_FIELDS``,
    text matching ``SECRET_PATTERN``, and each string in ``secrets`` (a key the recorder knows) wherever it is."""
    known = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def clean(item: Any, name: str = "") -> Any:
        if isinstance(item, dict):
            return {k: clean(v, str(k)) for k, v in item.items()}
        if isinstance(item, list):
            return [clean(v) for v in item]
        if name.lower() in SECRET_FIELDS and item not in (None, ""):
            return SCRUBBED
        if isinstance(item, str):
            for secret in known:
                item = item.replace(secret, SCRUBBED)
            return SECRET_PATTERN.sub(SCRUBBED, item)
        return item

    return clean(value)


@dataclass(frozen=True)
class Finding:
    """A secret left in a cassette: where (``turns.0.say``), and what kind."""

    where: str
    what: str


def scan(value: Cassette | str | PathLike[str] | Any, secrets: Iterable[str] = ()) -> list[Finding]:
    """Every secret in a cassette (a ``Cassette``, a file, or JSON-like data): empty when it is safe to share."""
    if isinstance(value, (str, PathLike)):
        value = json.loads(Path(value).read_text(encoding="utf-8"))
    elif isinstance(value, Cassette):
        value = value.model_dump(mode="json", exclude_none=True)
    known = [s for s in secrets if s]
    found: list[Finding] = []

    def walk(item: Any, where: str, name: str) -> None:
        if isinstance(item, dict):
            for k, v in item.items():
                walk(v, f"{where}.{k}" if where else str(k), str(k))
        elif isinstance(item, list):
            for i, v in enumerate(item):
                walk(v, f"{where}.{i}", "")
        elif name.lower() in SECRET_FIELDS and item not in (None, "", SCRUBBED):
            found.append(Finding(where, f"a value in the secret field {name!r}"))
        elif isinstance(item, str):
            if any(secret in item for secret in known):
                found.append(Finding(where, "a known key"))
            elif match := SECRET_PATTERN.search(item):
                found.append(Finding(where, f"text like a key ({match.group(0)[:3]}…)"))

    walk(value, "", "")
    return found


# -- recording -----------------------------------------------------------------------------------------------
class RecordableCall(Protocol):
    """What ``record`` needs of a call: its events (both ``RealtimeSession`` and ``BrowserCall`` have them)."""

    @property
    def events(self) -> Broadcast[dict[str, Any]]: ...


@dataclass
class _Reply:
    created: float
    fmt: WireFormat
    first: float | None = None
    chunks: list[bytes] = field(default_factory=list)


#: Samples quieter than this (about -54 dBFS) at either end of a reply heard on the track are the track's silence.
_SILENT = 64


def _trimmed(pcm: PCM) -> PCM:
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > _SILENT)
    return pcm[loud[0] : loud[-1] + 1] if loud.size else pcm[:0]


_OUTPUT_EVENTS = (
    "response.output_audio.delta",
    "response.output_audio_transcript.delta",
    "response.output_text.delta",
    "response.function_call_arguments.delta",
)


class Recorder:
    """Records a call's events and the model's replies as they arrive; ``save(path)`` writes the cassette.

    Subscribes to ``call.events`` at once: create it before ``connect()`` to have ``session.created``."""

    def __init__(self, call: RecordableCall, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.call = call
        self._clock = clock
        self._start = clock()
        self._events: list[CassetteEvent] = []
        self._turns: list[CassetteTurn] = []
        self._replies: dict[str, _Reply] = {}
        self._secrets: set[str] = set()
        self.meta: dict[str, Any] = {
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "client": type(call).__name__,
        }
        #: The reply the media track is playing (WebRTC), what it played of each, and each reply's turn.
        self._on_track: str | None = None
        self._heard: dict[str, list[PCM]] = {}
        self._rates: dict[str, int] = {}
        self._turn_of: dict[str, CassetteTurn] = {}
        self._tap: SinkTap | None = None
        self._source: SourceTap | None = None
        self._sent: list[PCM] = []
        if hasattr(call, "sink") and hasattr(call, "source"):  # a RealtimeSession: audio comes to the kernel
            self._tap = SinkTap(getattr(call, "sink", None), self._on_audio)
            setattr(call, "sink", self._tap)  # noqa: B010 (RecordableCall does not declare it)
            if (source := getattr(call, "source", None)) is not None:
                self._source = SourceTap(source, lambda pcm, _rate: self._sent.append(pcm.copy()))
                setattr(call, "source", self._source)  # noqa: B010
        self._unsubscribe: Callable[[], None] | None = call.events.on(self._on_event)

    def stop(self) -> None:
        """Record no more (``save`` stops too); the session's own sink and source are put back."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tap, self._tap = self._tap, None
        if tap is not None:
            original = tap.sink
            if getattr(self.call, "sink", None) is tap:
                setattr(self.call, "sink", original)  # noqa: B010 (RecordableCall does not declare it)
        if self._source is not None:
            original_source = self._source.source
            if getattr(self.call, "source", None) is self._source:
                setattr(self.call, "source", original_source)  # noqa: B010

    def _on_audio(self, pcm: PCM, rate: int) -> None:
        if self._on_track is not None and getattr(self.call, "transport_name", None) == "webrtc":
            self._heard.setdefault(self._on_track, []).append(pcm.copy())
            self._rates[self._on_track] = rate

    def _track_stopped(self, response_id: str) -> None:
        if self._on_track == response_id:
            self._on_track = None
        self._attach(response_id)

    def _attach(self, response_id: str) -> None:
        """The track's audio of a reply becomes its turn's, once both the turn and the audio are complete."""
        turn = self._turn_of.get(response_id)
        if turn is None or self._on_track == response_id or response_id not in self._heard:
            return
        heard = np.concatenate(self._heard.pop(response_id))
        pcm = _trimmed(resample(heard, self._rates.pop(response_id), REALTIME_RATE))
        if turn.say is not None and turn.audio is None and pcm.size:
            turn.audio = CassetteAudio.of(pcm)

    @property
    def turns(self) -> list[CassetteTurn]:
        return list(self._turns)

    def _remember_key(self) -> None:
        key = getattr(self.call, "key", None)
        value = getattr(key, "value", None)
        if isinstance(value, str):
            self._secrets.add(value)

    def _on_event(self, event: dict[str, Any]) -> None:
        now = self._clock() - self._start
        self._remember_key()
        kind = str(event.get("type", ""))
        kept = copy.deepcopy(event)
        if kind == "response.output_audio.delta" and isinstance(event.get("delta"), str):
            data = base64.b64decode(kept.pop("delta"))
            kept["rtkit_delta_bytes"] = len(data)
            if (reply := self._replies.get(str(event.get("response_id")))) is not None:
                reply.chunks.append(data)
        elif kind.endswith(".delta") and isinstance(event.get("delta"), str):
            # A key split over two deltas would escape the scrubbing: the whole text is in the ``.done`` event.
            kept["rtkit_delta_chars"] = len(kept.pop("delta"))
        self._events.append(CassetteEvent(t=round(now, 4), event=kept))
        if kind == "session.created":
            session = event.get("session") or {}
            self.meta.setdefault("model", session.get("model"))
            self.meta["transport"] = getattr(self.call, "transport_name", None)
        elif kind == "response.created":
            response = event.get("response") or {}
            fmt = ((response.get("audio") or {}).get("output") or {}).get("format")
            self._replies[str(response.get("id"))] = _Reply(now, WireFormat.of(fmt))
        elif kind == "output_audio_buffer.started":
            self._on_track = str(event.get("response_id"))
        elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            self._track_stopped(str(event.get("response_id")))
        elif kind in _OUTPUT_EVENTS:
            reply = self._replies.get(str(event.get("response_id")))
            if reply is not None and reply.first is None:
                reply.first = now
        elif kind == "response.done":
            self._finish(event.get("response") or {})

    def _finish(self, response: dict[str, Any]) -> None:
        reply = self._replies.pop(str(response.get("id")), None)
        delay = 0.0 if reply is None or reply.first is None else max(0.0, (reply.first - reply.created) * 1000)
        usage, status = response.get("usage"), response.get("status")
        for item in response.get("output") or []:
            if item.get("type") == "function_call":
                self._turns.append(
                    CassetteTurn(
                        call=item.get("name"),
                        arguments=item.get("arguments") or "{}",
                        usage=usage,
                        delay_ms=round(delay),
                        status=status,
                    )
                )
                return
        said = ""
        for item in response.get("output") or []:
            for part in item.get("content") or [] if item.get("type") == "message" else []:
                said += part.get("transcript") or part.get("text") or ""
        audio = None
        if reply is not None and reply.chunks:
            audio = CassetteAudio.of(reply.fmt.decode(b"".join(reply.chunks)))
        if said or audio is not None:
            turn = CassetteTurn(say=said, audio=audio, usage=usage, delay_ms=round(delay), status=status)
            self._turns.append(turn)
            self._turn_of[str(response.get("id"))] = turn
            self._attach(str(response.get("id")))

    def cassette(self) -> Cassette:
        """What was recorded so far, scrubbed."""
        self._remember_key()
        user = None
        if self._source is not None and self._sent:
            sent = np.concatenate(self._sent)
            user = CassetteAudio.of(resample(sent, self._source.sample_rate, REALTIME_RATE))
        cassette = Cassette(meta=self.meta, turns=self._turns, events=self._events, user_audio=user)
        raw = cassette.model_dump(mode="json")
        return Cassette.model_validate(scrub(raw, self._secrets))

    def save(self, path: str | PathLike[str]) -> Path:
        """Stop recording and write the cassette (scrubbed) to ``path``."""
        self.stop()
        return self.cassette().save(path)


def record(call: RecordableCall) -> Recorder:
    """Start recording ``call`` (a ``RealtimeSession`` or ``BrowserCall``); ``.save(path)`` writes the cassette."""
    return Recorder(call)


# -- comparing two recordings ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """Where two recordings' event sequences part: ``a`` has ``a_types`` where ``b`` has ``b_types``.

    ``kind``: ``missing`` (in A, not in B), ``extra`` (in B, not in A) or ``changed``. ``a_index``/``b_index``
    are where, in each cassette's ``events``; ``turn`` is the response it happens in (1 is the first
    ``response.created``; 0 before any)."""

    kind: Literal["missing", "extra", "changed"]
    a_index: int
    b_index: int
    turn: int
    a_types: tuple[str, ...]
    b_types: tuple[str, ...]

    def __str__(self) -> str:
        where = f"A event {self.a_index}, B event {self.b_index}, turn {self.turn}"
        if self.kind == "missing":
            return f"{where}: B lacks {_listed(self.a_types)}"
        if self.kind == "extra":
            return f"{where}: B has extra {_listed(self.b_types)}"
        return f"{where}: A has {_listed(self.a_types)}; B has {_listed(self.b_types)}"


def _listed(types: Sequence[str], most: int = 4) -> str:
    shown = ", ".join(types[:most])
    return shown if len(types) <= most else f"{shown} and {len(types) - most} more"


def event_types(cassette: Cassette, *, collapse: bool = True, ignore: Sequence[str] = ("rtkit.",)) -> list[str]:
    """The types of the events a cassette recorded, in order, without those starting with a prefix in
    ``ignore`` (rtkit's own notices). ``collapse``: in a run of consecutive ``.delta`` events each type counts
    once, where it first appears, since how a reply is cut into deltas, and how its audio and transcript deltas
    interleave, differ between the service and the emulator (and between runs)."""
    return [kind for kind, _ in _sequence(cassette, collapse, ignore)]


def _sequence(cassette: Cassette, collapse: bool, ignore: Sequence[str]) -> list[tuple[str, int]]:
    """``event_types``, each with its index in ``cassette.events``."""
    types: list[tuple[str, int]] = []
    run: set[str] = set()
    for index, recorded in enumerate(cassette.events):
        kind = str(recorded.event.get("type", ""))
        if any(kind.startswith(prefix) for prefix in ignore):
            continue
        if not (collapse and kind.endswith(".delta")):
            run.clear()
        elif kind in run:
            continue
        else:
            run.add(kind)
        types.append((kind, index))
    return types


_KINDS: dict[str, Literal["missing", "extra", "changed"]] = {
    "delete": "missing",
    "insert": "extra",
    "replace": "changed",
}


def diff(
    a: Cassette | str | PathLike[str],
    b: Cassette | str | PathLike[str],
    *,
    collapse: bool = True,
    ignore: Sequence[str] = ("rtkit.",),
) -> list[Difference]:
    """Where the event-type sequences of two recordings of one script differ (empty: none): the drift check
    between the service's recording and the emulator's."""
    first = a if isinstance(a, Cassette) else Cassette.load(a)
    second = b if isinstance(b, Cassette) else Cassette.load(b)
    sa, sb = _sequence(first, collapse, ignore), _sequence(second, collapse, ignore)
    ta, tb = [kind for kind, _ in sa], [kind for kind, _ in sb]
    # Where a difference is, as an index into each file's ``events`` (one past the last: at the end).
    at_a = [index for _, index in sa] + [len(first.events)]
    at_b = [index for _, index in sb] + [len(second.events)]
    turn_at = [0]
    for name in ta:
        turn_at.append(turn_at[-1] + (name == "response.created"))
    found: list[Difference] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        turn = turn_at[i1 + (op != "insert")]
        found.append(Difference(_KINDS[op], at_a[i1], at_b[j1], turn, tuple(ta[i1:i2]), tuple(tb[j1:j2])))
    return found


def render_diff(differences: Sequence[Difference], a: str = "A", b: str = "B") -> str:
    """The differences as the ``rtkit cassette diff`` command prints them."""
    if not differences:
        return f"{a} and {b}: the same event sequence"
    lines = [f"{len(differences)} difference(s) between {a} (A) and {b} (B):"]
    lines += [f"  {d}" for d in differences]
    return "\n".join(lines)
