"""The key panel: mint an ephemeral key, see it masked with its countdown, and see why minting failed."""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
from typing import Any

import ipywidgets as widgets

from rtkit.cache import TokenCache
from rtkit.keys import KeyProvider
from rtkit.tokens import EphemeralKey
from rtkit.widgets._ui import ShowsStaticCopy, StaticCopy, error_html, spawn


class KeyPanel(ShowsStaticCopy, widgets.VBox):
    """Mint through any key provider (broker, issuer) or through a ``TokenCache`` (then hits show too).

    ``await panel.mint()`` does what the button does and returns the key; the key itself is never shown
    or stored in widget state, only its fingerprint.
    """

    def __init__(
        self,
        keys: KeyProvider | None = None,
        *,
        cache: TokenCache | None = None,
        identity: str = "notebook",
        session: dict[str, Any] | None = None,
    ) -> None:
        if (keys is None) == (cache is None):
            raise ValueError("give either keys= (a key provider) or cache= (a TokenCache)")
        self._keys, self._cache = keys, cache
        self.identity, self.session = identity, session or {"type": "realtime"}
        self.key: EphemeralKey | None = None
        self.hit: bool | None = None
        self.error: BaseException | None = None
        self.mints = 0
        self._button = widgets.Button(description="Mint key", icon="key", button_style="primary")
        self._key = widgets.HTML("<i>no key yet</i>")
        self._countdown = widgets.HTML("")
        self._status = widgets.HTML("")
        self._button.on_click(lambda _: spawn(self.mint(), self._status))
        self._ticker: asyncio.Task[None] | None = None
        super().__init__([widgets.HBox([self._button, self._key, self._countdown]), self._status])
        self._copy = StaticCopy(self, lambda: {"text/html": self.static_html()})

    def static_html(self) -> str:
        """The panel's state as plain HTML, for where widgets do not render: the key's fingerprint, where it
        came from, and when it expires (a clock time: a countdown would be wrong as soon as it was saved)."""
        if self.key is None:
            body = "<i>no key yet</i>"
        else:
            cache = "" if self.hit is None else (" · cache hit" if self.hit else " · cache miss (minted)")
            expires = time.strftime("%H:%M:%S UTC", time.gmtime(self.key.expires_at.timestamp()))
            session, model = html.escape(self.key.session_id or "?"), html.escape(self.key.model or "?")
            body = (
                f"<code>{html.escape(self.key.fingerprint)}</code>{cache} · expires at {expires}<br>"
                f"session <code>{session}</code>, model {model}"
            )
        error = f"<br>{error_html(self.error)}" if self.error is not None else ""
        return f"<div class='rtkit-static'><b>🔑 Key panel</b> ({self.mints} minted) · {body}{error}</div>"

    async def mint(self) -> EphemeralKey:
        self._status.value = "minting…"
        self.error = None
        try:
            if self._cache is not None:
                result = await self._cache.get(self.identity, self.session)
                key, self.hit = result.key, result.hit
            else:
                assert self._keys is not None
                raw = await self._keys()
                if not isinstance(raw, EphemeralKey):
                    raise TypeError("this key provider returns bare strings; the panel needs EphemeralKey values")
                key, self.hit = raw, None
        except Exception as exc:
            self.error = exc
            self._status.value = error_html(exc)
            raise
        self.key = key
        self.mints += 1
        cache = "" if self.hit is None else (" · <b>cache hit</b>" if self.hit else " · cache miss (minted)")
        self._key.value = f"<code>{html.escape(key.fingerprint)}</code>{cache}"
        self._status.value = f"session <code>{html.escape(key.session_id or '?')}</code>, model {key.model}"
        self._tick()
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._run_countdown())
        return key

    def _tick(self) -> None:
        if self.key is None:
            return
        left = self.key.expires_in()
        if left <= 0:
            self._countdown.value = "· <span style='color:#c62828'>expired</span>"
        else:
            minutes, seconds = divmod(int(left), 60)
            self._countdown.value = f"· expires in {minutes}:{seconds:02d}"

    @property
    def countdown(self) -> str:
        """The countdown as displayed (for tests and headless runs)."""
        return str(self._countdown.value)

    async def _run_countdown(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while self.key is not None and self.key.expires_in() > -1:
                self._tick()
                await asyncio.sleep(1.0)
            self._tick()

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._copy.forget()
        super().close()
