"""The backend a notebook lesson runs against, and the call it makes: where the audio is, the reader chooses.

In a lesson the kernel plays the guide's *backend*: it holds the main key (the emulator's by default, or
``OPENAI_API_KEY``) and mints ephemeral keys; calls and widgets only ever see those. The *client* is
``backend.call()``, on the side the reader chose once (``RTKIT_AUDIO``) for every lesson:

* ``"recorded"`` (default): the kernel plays the lesson's recorded sentence or tone and records the reply.
  Runs anywhere, with no sound device and no browser: the notebooks' tests run this.
* ``"kernel"``: the kernel's own microphone and speaker (sounddevice), for Jupyter on a laptop.
* ``"browser"``: this browser tab's microphone and speaker (``BrowserCall``), for a JupyterHub, a Binder,
  any server whose kernel has no sound device. The emulator opens its CORS to the page showing the call.

Lessons keep their checks out of the reader's way with ``check(condition, "what you should have seen")``,
switch cells that need one backend with ``backend.only_on("emulator", why)``, and play a spoken turn back with
``await listen(call)``.
"""

from __future__ import annotations

import html
import importlib.util
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from rtkit.audio.base import AudioSink, AudioSource
from rtkit.call import LiveCall
from rtkit.emulator import Emulator
from rtkit.errors import ConfigurationError
from rtkit.keys import IssuerKeys
from rtkit.tokens import OPENAI_BASE_URL, TokenIssuer

if TYPE_CHECKING:
    import numpy as np

    from rtkit.widgets.browser_call import BrowserCall

__all__ = ["AudioSide", "LabBackend", "Listening", "audio_side", "check", "listen", "start_backend"]

AudioSide = Literal["recorded", "kernel", "browser"]
#: The reader's choice for every lesson, from the environment (a hub can set it for everyone).
AUDIO_ENV = "RTKIT_AUDIO"
#: Options both kinds of call take; the rest are passed only to the kind that knows them.
_SESSION_ONLY = ("ice_servers", "jitter_packets")
_BROWSER_ONLY = ("frontend_timeout",)


def _jupyter_proxy_available() -> bool:
    """jupyter-server-proxy is installed (the kernel shares the server's environment, as on most hubs)."""
    return importlib.util.find_spec("jupyter_server_proxy") is not None


def check(condition: object, expected: str) -> None:
    """A lesson's check: nothing when ``condition`` holds; else an ``AssertionError`` that says, in the lesson's
    words, what the reader should have seen (``expected``), instead of a bare ``assert``'s empty traceback.
    The notebooks' tests (nbval) fail on it, as on any error."""
    if not condition:
        raise AssertionError(
            f"Expected: {expected}. That is not what happened in this run: read the outputs above, and if you "
            "changed a cell, run the lesson again from the top (Kernel → Restart and run all)."
        )


def audio_side(choice: str | None = None) -> AudioSide:
    """``choice``, else ``$RTKIT_AUDIO``, else ``"recorded"``; anything else is a ``ConfigurationError``."""
    value = (choice or os.environ.get(AUDIO_ENV) or "recorded").strip().lower()
    if value not in get_args(AudioSide):
        raise ConfigurationError(
            f"Unknown audio side {value!r}.", hint=f"use one of {', '.join(get_args(AudioSide))} (or unset {AUDIO_ENV})"
        )
    return value  # type: ignore[return-value]


@dataclass
class LabBackend:
    base_url: str
    issuer: TokenIssuer
    keys: IssuerKeys
    emulator: Emulator | None = None
    real: bool = False
    notes: list[str] = field(default_factory=list)

    def call(
        self,
        config: dict[str, Any] | None = None,
        *,
        audio: AudioSide | str | None = None,
        source: AudioSource | None = None,
        **options: Any,
    ) -> LiveCall:
        """The lesson's call, on the side the reader chose (see the module's docstring).

        ``source`` is the lesson's recorded audio (a spoken sentence when not given); it is played only on the
        ``"recorded"`` side. Elsewhere the reader speaks, except where the lesson's source is a ``SilenceSource``
        (text turns): there the microphone starts muted, so that a room's chatter does not become turns (the
        call's Unmute button is one click away). ``options`` go to ``RealtimeSession`` or ``BrowserCall``
        (``transport``, ``reconnect``, ``connect_timeout``...). A ``BrowserCall`` must be on show before it
        connects: put it (or a ``ConnectionPanel``, which shows it) at the end of a cell, and connect in the next.
        """
        from rtkit.audio.sources import MicrophoneSource, SilenceSource, SpeechSource

        side = audio_side(audio)
        quiet = isinstance(source, SilenceSource)
        if side == "browser":
            call = self.browser_call(config, **{k: v for k, v in options.items() if k not in _SESSION_ONLY})
            call.muted = quiet
            return call
        from rtkit.audio.sinks import RecorderSink, SpeakerSink
        from rtkit.session import RealtimeSession

        session_options = {k: v for k, v in options.items() if k not in _BROWSER_ONLY}
        if side == "kernel":
            voice_in: AudioSource = source if quiet and source is not None else MicrophoneSource()
            voice_out: AudioSink = SpeakerSink()
        else:
            voice_in = source if source is not None else SpeechSource(lead_seconds=0.5)
            voice_out = RecorderSink()
        return RealtimeSession(
            self.keys, config, base_url=self.base_url, source=voice_in, sink=voice_out, **session_options
        )

    def browser_call(self, config: dict[str, Any] | None = None, **options: Any) -> BrowserCall:
        """A ``BrowserCall`` with this backend's keys, that the notebook's page can reach.

        The real API is reached directly. The kernel's emulator is reached through the Jupyter server
        (jupyter-server-proxy: ``proxy/<port>/v1``, same origin as the page, so it works on an https hub),
        or else directly (its CORS answers any page, as the service does; one started with a list of
        ``cors_origins`` is opened to this page when the page shows the call). On a JupyterHub the browser is
        elsewhere: the proxy carries HTTP and WebSockets but not WebRTC's UDP media, so such calls use the WebSocket.
        """
        from rtkit.widgets.browser_call import BrowserCall

        base_url = self.base_url
        if self.emulator is not None and _jupyter_proxy_available():
            base_url = f"proxy/{self.emulator.port}/v1"
            if os.environ.get("JUPYTERHUB_SERVICE_PREFIX") and options.get("transport") != "websocket":
                self.notes.append("On a JupyterHub, browser calls to the emulator run over its WebSocket.")
                options["transport"] = "websocket"
        return BrowserCall(self.keys, config, base_url=base_url, on_frontend=self.allow_page, **options)

    def allow_page(self, origin: str) -> None:
        """Let the notebook page at ``origin`` open calls on an emulator started with a list of ``cors_origins``
        (by default it answers any origin, and the real API needs nothing)."""
        if self.emulator is not None:
            self.emulator.allow_origin(origin)

    def only_on(self, backend: Literal["emulator", "real"], why: str) -> bool:
        """The one switch for a cell that needs one kind of backend: ``if backend.only_on("emulator", "fault
        injection needs it"):``. True on that backend; elsewhere it prints ``skipped: <why>`` (so the saved
        output says what did not run, and why) and returns False."""
        if (backend == "real") == self.real:
            return True
        print(f"skipped on the {'real API' if self.real else 'emulator'}: {why}")
        return False

    def describe(self) -> str:
        if self.real:
            return f"Real Realtime API at {self.base_url} (OPENAI_API_KEY is set)."
        return f"Local emulator at {self.base_url}: no API key needed, nothing leaves this machine."

    async def close(self) -> None:
        await self.issuer.aclose()
        if self.emulator is not None:
            await self.emulator.stop()


async def start_backend(
    *, real: bool | None = None, session: dict[str, Any] | None = None, **emulator_settings: Any
) -> LabBackend:
    """Start what a lesson needs. ``real=None`` means: the real API if ``OPENAI_API_KEY`` is set."""
    api_key = os.environ.get("OPENAI_API_KEY")
    if real is None:
        real = bool(api_key)
    if real:
        if not api_key:
            raise ConfigurationError("real=True needs OPENAI_API_KEY in the environment.")
        issuer = TokenIssuer(api_key, base_url=os.environ.get("OPENAI_BASE_URL", OPENAI_BASE_URL))
        return LabBackend(issuer.base_url, issuer, IssuerKeys(issuer, session), real=True)
    emulator = await Emulator(**emulator_settings).start()
    # Against the local emulator a retry is a demonstration, not a production backoff: its own waits stay
    # short (a server's Retry-After is still waited in full).
    issuer = TokenIssuer(emulator.api_key, base_url=emulator.base_url, backoff_max=0.6)
    return LabBackend(emulator.base_url, issuer, IssuerKeys(issuer, session), emulator=emulator)


@dataclass
class Listening:
    """What a call's spoken turns sounded like, as labelled clips (``(label, int16 PCM)`` at ``sample_rate``) and
    a note on where they come from; displayed, it is an audio player per clip."""

    note: str
    clips: list[tuple[str, np.ndarray]]
    sample_rate: int = 24_000

    def _repr_html_(self) -> str:
        from rtkit.audio.mp3 import audio_player

        parts = [f"<p>{html.escape(self.note)}</p>"]
        parts += [audio_player(pcm, self.sample_rate, label) for label, pcm in self.clips]
        return "".join(parts)


def _tone_of(source: Any) -> np.ndarray:
    """The tone a ``ToneSource`` plays (its first ten seconds if it plays for ever)."""
    from rtkit.audio.pcm import tone

    seconds = source.seconds if source.seconds is not None else 10.0
    return tone(seconds, frequency=source.frequency, amplitude=source.amplitude, rate=source.sample_rate)


def _voiced_spans(pcm: np.ndarray, rate: int, gap_s: float = 1.0, pad_s: float = 0.1) -> list[tuple[int, int]]:
    """Sample ranges of ``pcm`` louder than ``VOICED_DBFS`` (20 ms frames), joined across pauses under
    ``gap_s`` and padded by ``pad_s`` each side."""
    import numpy as np

    from rtkit.audio.pcm import frame_levels_dbfs
    from rtkit.metrics import VOICED_DBFS

    frame = rate // 50
    voiced = np.flatnonzero(frame_levels_dbfs(pcm, rate, frame_ms=20) > VOICED_DBFS)
    spans: list[tuple[int, int]] = []
    gap, pad = round(gap_s * 50), round(pad_s * rate)
    for index in voiced:
        if spans and index - spans[-1][1] <= gap:
            spans[-1] = (spans[-1][0], int(index))
        else:
            spans.append((int(index), int(index)))
    return [(max(0, a * frame - pad), min(pcm.size, (b + 1) * frame + pad)) for a, b in spans]


async def listen(call: LiveCall) -> Listening:
    """An audio player for the question and the reply of each spoken turn, from what the kernel side holds.

    * ``recorded`` side: the question is the sentence the kit played (a ``SpeechSource``: spoken again by the same
      voice, or the shipped recording), the replies are the stretches of speech in the call's ``RecorderSink``.
    * ``kernel`` side: your microphone and the speaker played live; the kernel keeps neither, so nothing is
      replayed (the note says so).
    * ``browser`` side: the audio never passes through the kernel (the page sends it to the API and plays the
      reply itself), but the page records both sides (``rtkit.recording``): the question as your microphone sent
      it and the reply as this tab played it (cut where you spoke over it), per turn.
    """
    import numpy as np

    from rtkit.audio.media import resample
    from rtkit.audio.sinks import RecorderSink
    from rtkit.audio.sources import HELLO_TEXT, PcmSource, SilenceSource, SpeechSource, ToneSource, load_hello
    from rtkit.audio.speech import speak

    if hasattr(getattr(call, "bridge", None), "fetch_recording"):  # a BrowserCall: its page recorded both sides
        from rtkit.errors import RtkitError
        from rtkit.recording import _kept_by_page

        try:
            heard = (await _kept_by_page(call).fetch()).clips()
        except RtkitError as exc:
            return Listening(f"Nothing to replay: the page's recording could not be fetched ({exc.message}).", [])
        count = {role: sum(c.role == role for c in heard) for role in ("user", "assistant")}
        seen = {"user": 0, "assistant": 0}
        labelled: list[tuple[str, np.ndarray]] = []
        for clip in heard:
            seen[clip.role] += 1
            name = "the question" if clip.role == "user" else "the reply"
            labelled.append((name if count[clip.role] == 1 else f"{name} {seen[clip.role]}", clip.pcm))
        note = "This tab recorded both sides: your microphone as it was sent, and the reply as it played here."
        return Listening(note if labelled else "Nothing to replay: this tab heard no spoken turn yet.", labelled)
    source, sink = getattr(call, "source", None), getattr(call, "sink", None)
    if not isinstance(sink, RecorderSink):
        where = "this browser tab" if source is None and sink is None else "the kernel's speaker"
        return Listening(
            f"Nothing to replay: the reply played live in {where}, and only the recorded side keeps the audio "
            f"(RTKIT_AUDIO={audio_side()}).",
            [],
        )
    questions: list[np.ndarray] = []
    rate = sink.sample_rate
    if isinstance(source, SpeechSource) and source.engine is not None:
        text = source.text
        if source.engine == "espeak-ng":
            question = await speak(text, voice=source.voice, words_per_minute=source.words_per_minute, rate=rate)
            voice = "spoken by espeak-ng"
        else:  # no espeak-ng here: the source played the shipped recording, whatever its text
            question, voice, text = load_hello(rate), "the kit's shipped recording", HELLO_TEXT
        note = f"The kit played a recorded sentence ({voice}): “{text}” (RTKIT_AUDIO=recorded: nobody spoke)."
        questions.append(np.asarray(question, dtype=np.int16))
    elif isinstance(source, SilenceSource):
        note = "The kit sent silence (this call's turns are text); here is what the model said."
    elif isinstance(source, (PcmSource, ToneSource)):
        # What the kit played, one clip per stretch of sound in it (lesson 5's three tones are three questions).
        played = source.pcm if isinstance(source, PcmSource) else _tone_of(source)
        played = resample(played, source.sample_rate, rate) if source.sample_rate != rate else played
        questions = [played[a:b] for a, b in _voiced_spans(played, rate)]
        note = "The kit played the lesson's sound (RTKIT_AUDIO=recorded: nobody spoke): what it played, and the reply."
    else:
        note = "The kit played the lesson's recording; here is what the model said."
    # The recorder holds the whole call, silences included (a WebRTC track never stops): each reply is a
    # stretch of speech, and turns are apart by more than a second of silence.
    spans = _voiced_spans(sink.pcm, rate)
    turns = len([t for t in call.metrics.turns if t.reply_seconds])
    replies = [sink.pcm[start:end] for start, end in spans]
    clips: list[tuple[str, np.ndarray]] = []
    if len(questions) == len(replies) == turns:  # one question and its reply, turn by turn
        for n, (asked, said) in enumerate(zip(questions, replies, strict=True), 1):
            suffix = f" {n}" if turns > 1 else ""
            clips += [(f"the question{suffix} (what the kit played)", asked), (f"reply{suffix}", said)]
        return Listening(note, clips, rate)
    clips += [
        (f"the question{f' {n}' if len(questions) > 1 else ''} (what the kit played)", q)
        for n, q in enumerate(questions, 1)
    ]
    for n, said in enumerate(replies, 1):
        clips.append((f"reply {n}" if len(replies) == turns else f"what the model said, part {n}", said))
    return Listening(note, clips, rate)
