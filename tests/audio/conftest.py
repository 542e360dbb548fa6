"""Fixtures that run rtkit's device code for real in a subprocess: with PortAudio hidden, or with virtual devices.

Both are real processes talking to the real PortAudio (or its absence); nothing is mocked. Each subprocess
probes the microphone and the speaker at once and reports JSON, so the two scenarios cost one start-up each.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from typing import Any

import pytest

PROBE = textwrap.dedent(
    """
    import asyncio, json
    import numpy as np
    from rtkit.audio import MicrophoneSource, SpeakerSink, tone
    from rtkit.errors import RtkitError

    def report(err):
        return {"class": type(err).__name__, "code": err.code, "message": err.message, "hint": err.hint}

    async def microphone():
        try:
            async with MicrophoneSource(sample_rate=48000) as mic:
                frames = [await mic.read() for _ in range(10)]
                return {"device": mic.device_name, "sizes": sorted({f.size for f in frames}),
                        "dtypes": sorted({str(f.dtype) for f in frames}),
                        "peak": max(int(np.abs(f.astype(np.int32)).max()) for f in frames)}
        except RtkitError as err:
            return report(err)

    async def speaker():
        try:
            async with SpeakerSink(sample_rate=48000) as out:
                out.write(tone(0.5, rate=48000))
                queued = out.buffered_seconds
                await asyncio.wait_for(out.drain(), 5)
                return {"device": out.device_name, "queued": queued, "left": out.buffered_seconds}
        except RtkitError as err:
            return report(err)

    print(json.dumps({"microphone": asyncio.run(microphone()), "speaker": asyncio.run(speaker())}))
    """
)

# ALSA's null plugin accepts playback instantly and its file plugin "records" a raw file, so PortAudio
# sees a working default input and output on a machine without a sound card. Neither is paced by a clock,
# which also floods the microphone's queue faster than real time (the bounded deque must cope).
ASOUNDRC = """
pcm.!default {{
    type asym
    playback.pcm "rtkit_null"
    capture.pcm "rtkit_file"
}}
pcm.rtkit_null {{ type null }}
pcm.rtkit_file {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
"""


def _run_probe(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)


def _parse(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _portaudio_files() -> set[str]:
    """Every file this machine would load as PortAudio: ldconfig's entries and the one sounddevice uses."""
    files: set[str] = set()
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    if os.path.exists(ldconfig):
        listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
        files |= {line.split("=>")[-1].strip() for line in listing.splitlines() if "libportaudio" in line}
    found = ctypes.util.find_library("portaudio")
    if found and os.path.isabs(found):
        files.add(found)
    try:
        import sounddevice

        files.add(str(sounddevice._libname))
    except OSError:
        pass
    return {os.path.realpath(f) for f in files if os.path.exists(f)}


@pytest.fixture(scope="session")
def without_portaudio() -> dict[str, Any]:
    """What MicrophoneSource and SpeakerSink raise in a process that cannot find PortAudio.

    The library and the loader's cache are covered with /dev/null inside a private mount namespace, so the
    subprocess sees a machine where ``libportaudio2`` was never installed and the host is left untouched.
    """
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        pytest.skip("hiding PortAudio needs Linux mount namespaces (util-linux unshare)")
    if os.geteuid() != 0:
        pytest.skip("hiding PortAudio needs root for `unshare -m` and `mount --bind`")
    files = _portaudio_files()
    if not files:
        pytest.skip("PortAudio is not installed here, so there is nothing to hide")
    hide = " && ".join(f"mount --bind /dev/null '{path}'" for path in sorted(files | {"/etc/ld.so.cache"}))
    script = f'{hide} || exit 97; exec "$0" -c "$1"'
    proc = _run_probe(["unshare", "-m", "sh", "-c", script, sys.executable, PROBE])
    if proc.returncode == 97 or "unshare failed" in proc.stderr:
        pytest.skip(f"this container may not create mount namespaces: {proc.stderr.strip()}")
    return _parse(proc)


#: What makes sound devices visible to PortAudio on Linux: the sound cards, and the ALSA plugins that reach a
#: sound server (PulseAudio, PipeWire). Covered with empty directories, none is left.
_SOUND_PATHS = ("/dev/snd", "/proc/asound", "/usr/share/alsa/alsa.conf.d", "/etc/alsa/conf.d")


@pytest.fixture(scope="session")
def without_sound_devices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What MicrophoneSource and SpeakerSink raise where PortAudio is installed but finds no device, on any
    machine (a laptop with a microphone included): the probe runs in a private mount namespace where the sound
    cards and the sound-server plugins are covered with an empty directory, with a HOME that has no .asoundrc
    and no sound server to reach. The host is left untouched."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        pytest.skip("hiding the sound devices needs Linux mount namespaces (util-linux unshare)")
    if os.geteuid() != 0:
        pytest.skip("hiding the sound devices needs root for `unshare -m` and `mount --bind`")
    try:
        import sounddevice  # noqa: F401
    except OSError:
        pytest.skip("PortAudio is not installed (apt-get install libportaudio2)")
    empty = tmp_path_factory.mktemp("no-sound")
    hide = [f"mount --bind '{empty}' '{path}'" for path in _SOUND_PATHS if os.path.isdir(path)]
    script = (" && ".join(hide) + " || exit 97; " if hide else "") + 'exec "$0" -c "$1"'
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALSA_", "PULSE_", "PIPEWIRE_", "JACK_"))}
    env.update({"HOME": str(empty), "PULSE_SERVER": "unix:/nonexistent", "JACK_NO_START_SERVER": "1"})
    proc = _run_probe(["unshare", "-m", "sh", "-c", script, sys.executable, PROBE], env=env)
    if proc.returncode == 97 or "unshare failed" in proc.stderr:
        pytest.skip(f"this container may not create mount namespaces: {proc.stderr.strip()}")
    return _parse(proc)


@pytest.fixture(scope="session")
def virtual_devices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What MicrophoneSource and SpeakerSink do against ALSA virtual devices (spoken audio as the mic)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("virtual devices are built from ALSA plugins, which only Linux has")
    try:
        import sounddevice  # noqa: F401
    except OSError:
        pytest.skip("PortAudio is not installed (apt-get install libportaudio2)")
    from rtkit.audio import load_hello

    home = tmp_path_factory.mktemp("alsa-home")
    infile = home / "microphone.raw"
    load_hello(48_000).astype("<i2").tofile(infile)
    (home / ".asoundrc").write_text(ASOUNDRC.format(infile=infile))
    env = {**os.environ, "HOME": str(home)}
    env.pop("ALSA_CONFIG_PATH", None)
    return _parse(_run_probe([sys.executable, "-c", PROBE], env=env))
