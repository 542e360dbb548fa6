"""``rtkit doctor``: what a workshop participant runs first — is this machine ready, and what to do if not.

Each check looks at one thing (PortAudio and its devices, espeak-ng, sox, Chromium, Redis, the lab extras, the
OpenAI API) and returns a ``Check``: ``ok``, ``warn`` (missing, but nothing asked for it) or ``FAIL``, with a
hint for anything not ok. The rule for ``FAIL``, the only status that makes the exit status 1:

* something configured that does not work: ``OPENAI_API_KEY`` set but the API refuses a mint, a Redis URL
  (``--redis-url`` or ``RTKIT_BROKER_REDIS_URL``) that does not answer a PING, a core dependency not installed;
* something missing that ``needs`` (``--need``) asked for: ``audio`` (PortAudio with a microphone and a
  speaker, espeak-ng), ``browser`` (Chromium), ``redis`` (a Redis answering at the URL given, or
  ``redis-server`` on PATH when none is), ``lab`` (the notebook extras), ``api`` (a key the API accepts).

Everything else missing is a ``warn``: the kit runs without it (the emulator's voice falls back to tones, a
lesson to its recording). No check imports what it only looks for, and none prints a secret: keys appear as
fingerprints (``sk-…abcd``), a Redis URL without its password.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import re
import shutil
import sys
import time
from collections.abc import Awaitable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from rtkit._ids import fingerprint
from rtkit.errors import AudioUnavailableError, RtkitError

__all__ = ["NEEDS", "Check", "Need", "Status", "exit_status", "render", "run_checks"]

Status = Literal["ok", "warn", "FAIL"]
Need = Literal["audio", "browser", "redis", "lab", "api"]
NEEDS: tuple[Need, ...] = ("audio", "browser", "redis", "lab", "api")

#: Where the browser tests look for Chromium (Debian's package; never a downloaded browser).
CHROMIUM = Path("/usr/bin/chromium")
#: What ``rtkit[lab]`` brings, by import name; looked up with ``find_spec``, never imported.
LAB_MODULES = ("jupyterlab", "ipywidgets", "anywidget", "matplotlib", "jupyter_server_proxy")
REDIS_URL_ENV = "RTKIT_BROKER_REDIS_URL"
_APT = "(make setup does this)"


@dataclass(frozen=True)
class Check:
    """One line of the report: ``name`` is the item, ``detail`` what was found, ``hint`` what to do (non-ok)."""

    name: str
    status: Status
    detail: str
    hint: str | None = None


def _missing(required: bool) -> Status:
    return "FAIL" if required else "warn"


def check_rtkit() -> Check:
    """rtkit's version, the Python running it, and whether every core dependency is installed."""
    python = f"Python {sys.version.split()[0]} ({sys.executable})"
    try:
        version = importlib.metadata.version("rtkit")
        requires = importlib.metadata.requires("rtkit") or []
    except importlib.metadata.PackageNotFoundError:
        return Check("rtkit", "warn", f"not installed as a package; {python}", "run `pip install -e .` in the repo")
    core = [m.group(0) for r in requires if ";" not in r and (m := re.match(r"[A-Za-z0-9._-]+", r))]
    absent = []
    for name in core:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            absent.append(name)
    if absent:
        return Check(
            "rtkit", "FAIL", f"{version}; missing {', '.join(absent)}; {python}", "run `pip install -e .` in the repo"
        )
    return Check("rtkit", "ok", f"{version}, {len(core)} dependencies installed; {python}")


def check_portaudio(*, required: bool = False) -> Check:
    """sounddevice loads PortAudio and lists devices; no default microphone or speaker is a warning unless
    ``required``. Blocks (PortAudio probes the sound system): run it in a thread from async code."""
    from rtkit.audio import _portaudio

    try:
        sd = _portaudio.load_sounddevice("input")
    except AudioUnavailableError as err:
        return Check("PortAudio", _missing(required), err.message, err.hint)
    except ImportError:
        return Check("PortAudio", _missing(required), "the sounddevice package is not installed", "pip install -e .")
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        return Check("PortAudio", _missing(required), f"installed, but cannot list devices: {exc}", _portaudio._LISTING)
    inputs = sum(1 for device in devices if device["max_input_channels"] > 0)
    outputs = sum(1 for device in devices if device["max_output_channels"] > 0)
    detail = f"{inputs} input, {outputs} output devices ({sd.get_portaudio_version()[1].split(',')[0]})"
    absent: list[AudioUnavailableError] = []
    kinds: tuple[_portaudio.Kind, ...] = ("input", "output")
    for kind in kinds:
        try:
            _portaudio.find_device(sd, None, kind)
        except AudioUnavailableError as err:
            absent.append(err)
    if not absent:
        return Check("PortAudio", "ok", detail)
    hints = [err.hint for err in absent if err.hint]
    return Check(
        "PortAudio",
        _missing(required),
        f"{detail}; " + " ".join(err.message for err in absent),
        "; ".join(dict.fromkeys(hints)) or None,
    )


def check_program(name: str, *, purpose: str, hint: str, required: bool = False, path: Path | None = None) -> Check:
    """A program on PATH (or at ``path``): what it is for says why its absence matters."""
    found = str(path) if path is not None and path.exists() else shutil.which(name)
    if found:
        return Check(name, "ok", f"{found} ({purpose})")
    where = f"not at {path} nor on PATH" if path is not None else "not on PATH"
    return Check(name, _missing(required), f"{where}: {purpose}", hint)


#: The first ipykernel that reads a widget's messages while a cell awaits (a BrowserCall awaits its page).
IPYKERNEL_FOR_BROWSER_CALLS = (7, 4)


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def check_lab(*, required: bool = False, ipykernel: str | None = None) -> Check:
    """The notebook extras, found by ``find_spec`` (importing JupyterLab to look for it would take seconds), and
    an ipykernel recent enough for a browser call (``ipykernel``: its version, the installed one by default)."""
    try:
        ipykernel = ipykernel or importlib.metadata.version("ipykernel")
    except importlib.metadata.PackageNotFoundError:
        ipykernel = None
    if ipykernel and _release(ipykernel) < IPYKERNEL_FOR_BROWSER_CALLS:
        wanted = ".".join(map(str, IPYKERNEL_FOR_BROWSER_CALLS))
        return Check(
            "lab extras",
            _missing(required),
            f"ipykernel {ipykernel}: a browser call's page is not heard while a cell awaits it before {wanted}",
            f"run `pip install -U 'ipykernel>={wanted}'`",
        )
    absent = []
    for module in LAB_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            absent.append(module)
    if not absent:
        return Check("lab extras", "ok", ", ".join(LAB_MODULES) + (f"; ipykernel {ipykernel}" if ipykernel else ""))
    return Check(
        "lab extras",
        _missing(required),
        f"missing {', '.join(absent)}: the notebooks and rtkit.widgets need them",
        "run `pip install -e '.[lab]'`",
    )


def _without_password(url: str) -> str:
    """``url`` fit to print: a password in it becomes ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "(unparsable URL)"


async def check_redis(url: str, *, timeout: float = 2.0) -> Check:
    """A PING to the Redis at ``url`` within ``timeout`` seconds, with the broker's connection options; a URL
    was configured, so no answer is a failure."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from rtkit.cache import redis_options

    shown = _without_password(url)
    try:
        client = Redis.from_url(url, **redis_options(timeout))
    except ValueError as exc:
        return Check("Redis", "FAIL", f"{shown} is not a Redis URL: {exc}", "use redis://HOST:PORT/DB")
    try:
        async with asyncio.timeout(timeout):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Check(
            "Redis",
            "FAIL",
            f"no answer to PING at {shown} within {timeout:g} s: {reason}",
            "start it (`redis-server --port PORT`) or fix the URL (--redis-url, $" + REDIS_URL_ENV + ")",
        )
    finally:
        await client.aclose()
    return Check("Redis", "ok", f"PING answered at {shown}")


async def check_api(
    api_key: str | None, *, base_url: str | None = None, timeout: float = 5.0, required: bool = False
) -> Check:
    """With a key, one mint at ``base_url`` (default the real API) within ``timeout`` seconds: a refusal is a
    failure, since a key set is a key meant to be used. Without one, the emulator serves every lesson: a
    warning unless ``required``."""
    if not api_key or not api_key.strip():
        return Check(
            "OpenAI API",
            _missing(required),
            "OPENAI_API_KEY is not set: the demo, lessons and tests use the local emulator",
            "export OPENAI_API_KEY=… to call the real API",
        )
    from rtkit.tokens import OPENAI_BASE_URL, TokenIssuer

    base_url = base_url or OPENAI_BASE_URL
    shown = f"OPENAI_API_KEY {fingerprint(api_key)}"
    started = time.perf_counter()
    try:
        async with TokenIssuer(api_key, base_url=base_url, timeout=timeout) as issuer:
            minted = await issuer.issue()
    except RtkitError as err:
        return Check("OpenAI API", "FAIL", f"{shown}, {base_url}: {err.message}", err.hint)
    except ValueError as exc:  # httpx.InvalidURL and the like: the URL, not the key
        return Check(
            "OpenAI API", "FAIL", f"cannot use the base URL {base_url!r}: {exc}", "pass --base-url http(s)://…/v1"
        )
    elapsed = time.perf_counter() - started
    return Check("OpenAI API", "ok", f"{shown}: minted {minted.fingerprint} at {base_url} in {elapsed * 1000:.0f} ms")


async def _guarded(name: str, check: Awaitable[Check]) -> Check:
    """A check that raised is a failed line with the exception's name and message, not a traceback that hides
    the other lines: the doctor is what runs when something is already wrong."""
    try:
        return await check
    except Exception as exc:  # reported, not swallowed: the line says what was raised
        return Check(name, "FAIL", f"the check itself failed: {type(exc).__name__}: {exc}", "please report this")


async def run_checks(
    *,
    env: Mapping[str, str],
    needs: Collection[Need] = (),
    redis_url: str | None = None,
    base_url: str | None = None,
    timeout: float = 5.0,
) -> list[Check]:
    """Every check, concurrently (the blocking ones in threads), in report order. ``env`` supplies
    ``OPENAI_API_KEY`` and, when ``redis_url`` is None, ``RTKIT_BROKER_REDIS_URL``; ``base_url`` defaults to
    the real API. The whole run takes about ``timeout`` seconds at most."""
    redis_url = redis_url or env.get(REDIS_URL_ENV) or None
    apt = "run `apt-get install {}` " + _APT
    programs = {
        "espeak-ng": ("the emulator's voice and the spoken test fixtures; without it, tones and a recording", "audio"),
        "sox": ("optional: converting audio files to WAV", None),
        "chromium": ("the real-browser tests only", "browser"),
        # A Redis elsewhere needs no local server: then the PING is what "redis" requires.
        "redis-server": ("several broker processes sharing keys and rate limits", None if redis_url else "redis"),
    }
    pending: dict[str, Awaitable[Check]] = {
        "rtkit": asyncio.to_thread(check_rtkit),
        "PortAudio": asyncio.to_thread(check_portaudio, required="audio" in needs),
    }
    for program, (purpose, need) in programs.items():
        pending[program] = asyncio.to_thread(
            check_program,
            program,
            purpose=purpose,
            hint=apt.format(program),
            required=need in needs,
            path=CHROMIUM if program == "chromium" else None,
        )
    if redis_url:
        pending["Redis"] = check_redis(redis_url, timeout=min(timeout, 2.0))
    pending["lab extras"] = asyncio.to_thread(check_lab, required="lab" in needs)
    pending["OpenAI API"] = check_api(
        env.get("OPENAI_API_KEY"), base_url=base_url, timeout=timeout, required="api" in needs
    )
    return list(await asyncio.gather(*(_guarded(name, check) for name, check in pending.items())))


def render(checks: list[Check]) -> str:
    """One line per check: mark, item, what was found, and after ``—`` what to do about it."""
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        line = f"{check.status:<4}  {check.name:<{width}}  {_one_line(check.detail)}"
        if check.hint and check.status != "ok":
            line += f" — {_one_line(check.hint)}"
        lines.append(line)
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def exit_status(checks: list[Check]) -> int:
    """1 when any check failed (something required is missing or broken), else 0."""
    return 1 if any(check.status == "FAIL" for check in checks) else 0
