"""Debian's Chromium for the browser tests: where it is, how it is started, where screenshots go.

Never a downloaded browser: the tests drive ``/usr/bin/chromium`` (``apt-get install chromium``) with
Playwright's ``executable_path``, and a module without it is skipped with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

#: Headless and quiet: no GPU, no QUIC, and none of the background traffic this closed network refuses.
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: For WebRTC against a loopback peer: a fake microphone (a beep every 500 ms), loopback ICE candidates
#: (without this flag Chromium gathers none on lo), raw IP candidates, and audio that plays unprompted.
WEBRTC_ARGS = [
    *BASE_ARGS,
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]
#: Grants the microphone without a prompt. Without it, headless Chromium answers the prompt "deny".
ALLOW_MICROPHONE = "--use-fake-ui-for-media-stream"


def require_chromium() -> None:
    """Skip the calling test module, with the reason, where Chromium or Playwright is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip(
            "needs playwright (pip install -e '.[dev]'; the browser is Debian's, never downloaded)",
            allow_module_level=True,
        )


@contextlib.asynccontextmanager
async def launched_chromium(args: list[str]) -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, started with ``args`` and closed on the way out, whatever happened."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield browser
        finally:
            await browser.close()
