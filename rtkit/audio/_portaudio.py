"""PortAudio (through sounddevice) behind one door, so the microphone and the speaker fail the same way.

sounddevice is imported lazily: importing it loads and initialises PortAudio, which raises ``OSError``
without ``libportaudio2`` and can spend a few hundred milliseconds probing ALSA — neither belongs in
``import rtkit``, and callers run these functions in a worker thread to keep the event loop free.
"""

from __future__ import annotations

from typing import Any, Literal

from rtkit.errors import (
    AudioUnavailableError,
    MicrophoneDeniedError,
    MicrophoneUnavailableError,
    SpeakerUnavailableError,
)

Kind = Literal["input", "output"]

_FALLBACK = {
    "input": "or feed SpeechSource() or WavFileSource(path) instead of a microphone",
    "output": "or record with RecorderSink() instead of playing aloud",
}
_NOUN = {"input": "microphone", "output": "speaker"}
_LISTING = "`python -m sounddevice` lists this machine's devices"

# PortAudio error codes (portaudio.h) and the ALSA errnos that arrive as a host error.
_PA_INVALID_SAMPLE_RATE = -9997
_PA_DEVICE_UNAVAILABLE = -9985
_BUSY_MARKERS = ("device unavailable", "busy", "[alsa error -16]")
_DENIED_MARKERS = ("permission denied", "not permitted", "[alsa error -13]", "[alsa error -1]")


def _unavailable(kind: Kind) -> type[AudioUnavailableError]:
    return MicrophoneUnavailableError if kind == "input" else SpeakerUnavailableError


def load_sounddevice(kind: Kind) -> Any:
    """The ``sounddevice`` module, or the typed error saying PortAudio is missing."""
    try:
        import sounddevice
    except OSError:
        raise _unavailable(kind)(
            f"PortAudio, the library that talks to sound cards, is not installed, so the {_NOUN[kind]} cannot be used.",
            hint=f"run `apt-get install libportaudio2` (make setup does this), {_FALLBACK[kind]}",
        ) from None
    return sounddevice


def find_device(sd: Any, device: int | str | None, kind: Kind) -> dict[str, Any]:
    """PortAudio's description of the device to open, or the typed error saying there is none."""
    noun = _NOUN[kind]
    try:
        info: dict[str, Any] = sd.query_devices(device, kind=kind)
    except (sd.PortAudioError, ValueError):
        # With no default device PortAudio says "Error querying device -1"; a name that matches
        # nothing, or a device without channels in this direction, is a ValueError.
        if device is None:
            raise _unavailable(kind)(
                f"No {noun} found on this machine.",
                hint=f"connect one (a container or remote VM has none), {_FALLBACK[kind]}",
            ) from None
        raise _unavailable(kind)(
            f"No {noun} matches device={device!r}.",
            hint=f"{_LISTING}; pass a name or index from that list, or device=None for the default",
        ) from None
    return info


def open_error(err: Exception, kind: Kind, name: str, sample_rate: int) -> AudioUnavailableError:
    """The typed error for a device that exists but would not open, keeping PortAudio's words only when unknown."""
    noun = _NOUN[kind]
    text = str(err).lower()
    code = err.args[1] if len(err.args) > 1 and isinstance(err.args[1], int) else None
    if code == _PA_DEVICE_UNAVAILABLE or any(marker in text for marker in _BUSY_MARKERS):
        return _unavailable(kind)(
            f"The {noun} {name!r} is busy: another program is using it.",
            hint="close that program (a video call, a browser tab) or pick another device",
        )
    if any(marker in text for marker in _DENIED_MARKERS):
        denied = MicrophoneDeniedError if kind == "input" else SpeakerUnavailableError
        return denied(
            f"This process may not use the {noun} {name!r}: permission denied.",
            hint="on Linux add your user to the `audio` group; on macOS allow your terminal in Privacy settings",
        )
    if code == _PA_INVALID_SAMPLE_RATE or "sample rate" in text:
        return _unavailable(kind)(
            f"The {noun} {name!r} cannot run at {sample_rate} Hz.",
            hint="pass a rate it supports (48000 and 44100 are the common ones)",
        )
    first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
    return _unavailable(kind)(f"The {noun} {name!r} could not be opened: {first_line}.", hint=_LISTING)


def open_stream(
    kind: Kind, device: int | str | None, sample_rate: int, callback: Any, blocksize: int = 0
) -> tuple[Any, str]:
    """Open and start a mono int16 stream on the device; returns it with the device's name.

    Every failure (no PortAudio, no such device, busy, unsupported rate) is a typed rtkit error.
    """
    sd = load_sounddevice(kind)
    info = find_device(sd, device, kind)
    name = str(info["name"])
    stream_class = sd.InputStream if kind == "input" else sd.OutputStream
    stream = None
    try:
        stream = stream_class(
            device=info["index"],
            samplerate=sample_rate,
            blocksize=blocksize,
            channels=1,
            dtype="int16",
            callback=callback,
        )
        stream.start()
    except (sd.PortAudioError, ValueError) as err:
        if stream is not None:
            stream.close(ignore_errors=True)
        raise open_error(err, kind, name, sample_rate) from err
    return stream, name
