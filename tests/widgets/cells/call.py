# Cells of a notebook the browser tests write and run in JupyterLab (tests/jupyterlab.py notebook_cells):
# each '# %%' starts a cell. After setup.py: a BrowserCall over WebRTC, one clean spoken turn, levels and stats.

# %%
call = BrowserCall(
    keys,
    base_url=backend.base_url,
    on_frontend=backend.allow_page,
    reconnect=ReconnectPolicy(max_attempts=4, initial_delay=0.2),
)
plot = LevelPlot(call)
states, seen = [], []
call.states.on(lambda change: states.append(change.state))
call.events.on(lambda event: seen.append(event["type"]))
call

# %%
await call.connect()
assert call.state == "connected" and seen[0] == "session.created", (call.state, seen)
print("CONNECTED over", call.transport_name, "in", call.metrics.connects[-1].total_ms, "ms")

# %%
# A 200 ms silence ends the turn, and the reply is not interrupted.
turn_detection = {"type": "server_vad", "silence_duration_ms": 200, "interrupt_response": False}
await one_spoken_turn(call, turn_detection, until="output_audio_buffer.stopped")
TURN = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "response.created",
    "output_audio_buffer.started",
    "response.output_audio_transcript.done",
    "response.done",
    "output_audio_buffer.stopped",
]
assert not [t for t in TURN if t not in seen], [t for t in TURN if t not in seen]
(turn,) = await call.metrics.wait_for_turns(1, timeout=10)  # the turn ends once the browser has played it out
# Unmuted only now: a beep while the reply still plays (a loaded machine's jitter buffer holds up to 0.5 s) is
# a barge-in, and the page would rightly stop the reply before it was heard.
call.muted = False
assert turn.status == "completed" and turn.first_audio_ms and turn.reply_end_ms > turn.first_audio_ms, turn
print("TURN", turn)

# %%
inputs, outputs = [v for _, v in plot.inputs], [v for _, v in plot.outputs]
assert len(inputs) > 20 and max(inputs) > -45, inputs[-20:]
assert outputs and max(outputs) > -45, outputs[-20:]
stats = call.last_stats
assert stats is not None and stats.packets_received and stats.rtt_ms is not None, stats
print("LEVELS", len(inputs), "input readings, loudest", max(inputs), "dBFS; model loudest", max(outputs), "dBFS")
print("STATS", stats)
plot.snapshot()
