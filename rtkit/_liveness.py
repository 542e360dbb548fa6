"""Whether a WebRTC peer is still there, for both ends of a call (rtkit's client and the emulator).

aiortc notices a silent peer only when ICE consent fails (six checks 5 s apart, about 30 s). Both ends
want to know much sooner, each with its own policy (the client allows a grace period, the emulator frees
the call), from the same measure: datagrams received past ICE (DTLS, SCTP, RTP, RTCP), which a live peer
sends all the time, muted or not.
"""

from __future__ import annotations

import asyncio
import time

from aiortc import RTCPeerConnection, RTCTransportStats

__all__ = ["PacketWatch"]


class PacketWatch:
    """Polls a peer connection's packet counters (aiortc's public ``getStats``) every ``poll`` seconds."""

    def __init__(self, pc: RTCPeerConnection, poll: float) -> None:
        self.pc = pc
        self.poll = poll
        #: Seconds the peer has been silent, as of the last poll.
        self.quiet = 0.0
        self._received = -1
        self._last = time.monotonic()

    async def step(self) -> float:
        """Wait one poll, then return how long the peer has sent nothing (0.0 when something arrived)."""
        await asyncio.sleep(self.poll)
        stats = await self.pc.getStats()
        count = sum(s.packetsReceived for s in stats.values() if isinstance(s, RTCTransportStats))
        now = time.monotonic()
        # A loop blocked for a while (a busy notebook cell) is not a silent peer: its packets wait unread in
        # the socket, so a late poll counts as one on time.
        elapsed, self._last = min(now - self._last, 2 * self.poll), now
        if count != self._received:
            self._received, self.quiet = count, 0.0
        else:
            self.quiet += elapsed
        return self.quiet
