"""The one media path: 20 ms frames with running pts, a drift-free pacer, and a streaming resampler whose
output is the whole-buffer result, sample for sample, with an exact count per chunk."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from rtkit.audio.media import OPUS_RATE, Framer, Pacer, Resampler, frame_samples, frames_from_pcm, resample
from rtkit.audio.pcm import REALTIME_RATE, tone
from rtkit.errors import ConfigurationError


class FakeClock:
    """A clock that moves only when the code under test sleeps (plus any lag a test adds)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_frames_from_pcm_cuts_20_ms_frames_zero_pads_the_last_and_counts_pts_in_samples() -> None:
    pcm = tone(0.05, rate=REALTIME_RATE)  # 1200 samples: two whole frames and a half
    frames = frames_from_pcm(pcm, REALTIME_RATE, pts=480)
    assert [f.samples for f in frames] == [480, 480, 480]
    assert [f.pts for f in frames] == [480, 960, 1440]
    assert all(f.time_base == Fraction(1, REALTIME_RATE) and f.sample_rate == REALTIME_RATE for f in frames)
    joined = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert np.array_equal(joined[:1200], pcm) and not joined[1200:].any()


def test_framer_stamps_consecutive_chunks_of_any_size_in_a_one_over_rate_time_base() -> None:
    framer = Framer(OPUS_RATE)
    sizes = [960, 960, 480, 960]
    frames = [framer.frame(np.zeros(n, dtype=np.int16)) for n in sizes]
    assert [f.pts for f in frames] == [0, 960, 1920, 2400]
    assert frames[-1].time_base == Fraction(1, OPUS_RATE) and framer.pts == 3360


def test_frame_samples_refuses_a_rate_that_cannot_make_whole_20_ms_frames() -> None:
    assert frame_samples(OPUS_RATE) == 960 and frame_samples(44_100) == 882
    with pytest.raises(ConfigurationError, match="11025 Hz cannot be cut into 20 ms frames"):
        frame_samples(11_025)


async def test_pacer_releases_tick_n_at_start_plus_n_periods_without_drifting() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    start = clock.now
    released = []
    for n in range(50):
        await pacer.wait()
        released.append(clock.now - start)
        clock.now += 0.003 if n % 2 else 0.0  # work between ticks eats into the next wait, not the schedule
    assert released[0] == 0.0 and clock.sleeps[0] == pytest.approx(0.02)
    assert released[-1] == pytest.approx(49 * 0.02)


async def test_pacer_restarts_its_schedule_after_a_stall_instead_of_bursting() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    await pacer.wait()
    clock.now += 1.0  # a blocked loop
    await pacer.wait()
    await pacer.wait()
    assert clock.sleeps == [pytest.approx(0.02)]  # restarted at the stall's end: the next tick waits a period


async def test_pacer_without_max_lag_catches_up_every_overdue_tick_at_once() -> None:
    clock = FakeClock()
    pacer = Pacer(max_lag=None, clock=clock, sleep=clock.sleep)
    await pacer.wait()
    clock.now += 0.1
    for _ in range(5):
        await pacer.wait()
    assert clock.sleeps == []
    await pacer.wait()
    assert clock.sleeps == [pytest.approx(0.02)]


@pytest.mark.parametrize(
    ("from_rate", "to_rate"), [(REALTIME_RATE, OPUS_RATE), (OPUS_RATE, REALTIME_RATE), (8_000, REALTIME_RATE)]
)
def test_streamed_resampling_is_the_whole_buffer_result_delayed_with_an_exact_count_per_chunk(
    from_rate: int, to_rate: int
) -> None:
    signal = tone(1.0, frequency=440.0, rate=from_rate)
    rng = np.random.default_rng(7)
    resampler = Resampler(to_rate)
    cuts = np.unique(np.append(np.cumsum(rng.integers(1, 700, size=200)), signal.size))
    cuts = cuts[cuts <= signal.size]
    chunks, fed = [], 0
    for end in cuts:
        chunks.append(resampler.push(signal[fed:end], from_rate))
        fed = int(end)
        assert sum(c.size for c in chunks) == fed * to_rate // from_rate  # a 20 ms chunk in is 20 ms out
    streamed = np.concatenate([*chunks, resampler.flush()]).astype(np.int32)
    whole = resample(signal, from_rate, to_rate).astype(np.int32)
    lead = int(np.argmax(streamed != 0)) - int(np.argmax(whole != 0))
    assert 0 < lead <= to_rate // 500  # the filter's delay, played out as leading silence: at most 2 ms
    assert not streamed[:lead].any()
    # No click, no drift: every streamed sample is the whole-buffer one, shifted by that fixed delay.
    assert np.array_equal(streamed[lead : lead + whole.size], whole)


def test_resampler_turns_each_24_khz_frame_into_one_whole_48_khz_frame_the_opus_encoder_passes_through() -> None:
    resampler = Resampler(OPUS_RATE)
    encoder_fifo = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE, frame_size=960)
    framer = Framer(OPUS_RATE)
    for n in range(5):
        wide = resampler.push(tone(0.02, rate=REALTIME_RATE), REALTIME_RATE)
        assert wide.size == 960
        # aiortc's OpusEncoder feeds this FIFO: each frame comes out at once, not one frame later.
        assert [f.samples for f in encoder_fifo.resample(framer.frame(wide))] == [960], n


def test_resampler_converts_stereo_48_khz_opus_frames_to_exactly_480_mono_samples_each() -> None:
    resampler = Resampler(REALTIME_RATE)
    stereo = np.repeat(tone(0.02, rate=OPUS_RATE), 2).reshape(1, -1)
    for _ in range(3):
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = OPUS_RATE
        assert resampler.convert(frame).size == 480


def test_resampler_passes_same_rate_mono_through_untouched_and_reset_drops_the_held_tail() -> None:
    pcm = tone(0.02, rate=REALTIME_RATE)
    assert Resampler(REALTIME_RATE).push(pcm, REALTIME_RATE) is pcm
    resampler = Resampler(OPUS_RATE)
    resampler.push(pcm, REALTIME_RATE)
    resampler.reset()
    assert resampler.flush().size == 0
    assert resampler.push(pcm, REALTIME_RATE).size == 960  # a fresh stream, exact from its first chunk


async def test_emulator_voice_track_hands_the_encoder_whole_48_khz_frames_that_leave_as_packets_at_once() -> None:
    from aiortc.codecs.opus import OpusEncoder

    from rtkit.emulator.webrtc import ModelAudioTrack

    track = ModelAudioTrack()
    events: list[tuple[str, str]] = []
    track.on_started = lambda rid: events.append(("started", rid))
    track.on_stopped = lambda rid: events.append(("stopped", rid))
    reply = tone(0.1, frequency=880.0, amplitude=0.5, rate=REALTIME_RATE)
    track.enqueue(reply[:1000], "resp_1")  # chunks that do not fill whole frames
    track.enqueue(reply[1000:], "resp_1")
    track.finish("resp_1")
    encoder = OpusEncoder()
    frames, packets = [], []
    for _ in range(7):
        frame = await track.recv()
        frames.append(frame)
        packets.append(encoder.encode(frame)[0])
    track.stop()
    assert all(f.samples == 960 and f.sample_rate == OPUS_RATE for f in frames)
    assert [f.pts for f in frames] == [960 * n for n in range(7)]
    assert all(len(p) == 1 for p in packets)  # one Opus packet per frame, none held back a frame
    assert events == [("started", "resp_1"), ("stopped", "resp_1")] and not track.playing
    played = np.concatenate([f.to_ndarray().reshape(-1) for f in frames[:5]])
    # The 0.1 s reply fills exactly five frames: the resampler's tail is flushed in at finish(), nothing lost.
    assert np.array_equal(
        played, np.concatenate([np.zeros(32, np.int16), resample(reply, REALTIME_RATE, OPUS_RATE)])[:4800]
    )
    assert not frames[5].to_ndarray().any()


async def test_session_source_track_sends_each_24_khz_source_frame_as_one_48_khz_frame() -> None:
    from rtkit.audio.sources import ToneSource
    from rtkit.transports.webrtc import SourceTrack

    seen: list[int] = []
    track = SourceTrack(ToneSource(sample_rate=REALTIME_RATE), lambda pcm, rate: seen.append(rate))
    frames = [await track.recv() for _ in range(3)]
    track.stop()
    assert [(f.samples, f.sample_rate, f.pts) for f in frames] == [
        (960, OPUS_RATE, 0),
        (960, OPUS_RATE, 960),
        (960, OPUS_RATE, 1920),
    ]
    assert seen == [REALTIME_RATE] * 3  # input meters still see the source's own frames


async def test_emulator_voice_track_plays_a_reply_in_as_many_frames_as_before_and_clear_cuts_it() -> None:
    from rtkit.emulator.webrtc import ModelAudioTrack

    track = ModelAudioTrack()
    reply = tone(0.03, frequency=880.0, amplitude=0.5, rate=REALTIME_RATE)  # a frame and a half
    track.enqueue(reply, "resp_1")
    track.finish("resp_1")
    frames = [(await track.recv()).to_ndarray().reshape(-1) for _ in range(3)]
    whole = np.concatenate([np.zeros(32, np.int16), resample(reply, REALTIME_RATE, OPUS_RATE)])
    assert np.array_equal(np.concatenate(frames[:2])[: whole.size], whole[:1920])  # the tail fills the padding
    assert not frames[2].any() and not track.playing
    track.enqueue(reply, "resp_2")
    assert track.playing and track.clear() == "resp_2" and not track.playing
    assert not (await track.recv()).to_ndarray().any()  # cut at once: silence, not the rest of the reply
    track.stop()
