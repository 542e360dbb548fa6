# Cells of a notebook the browser tests write and run in JupyterLab (tests/jupyterlab.py notebook_cells):
# each '# %%' starts a cell. Runs after a connected `call` (setup.py, spoken_turn.py, then call.py or
# websocket.py): the user talks over a long reply read out by espeak; the fake microphone's next beep is the
# interruption. The page stops playback and truncates the item to what its Web Audio clock says was played.

# %%
call.muted = True
await asyncio.sleep(1.0)  # the last beep's turn ends
barge_ins, errors = [], []
call.events.on(lambda e: e["type"] == "rtkit.barge_in" and barge_ins.append(e))
call.events.on(lambda e: e["type"] == "error" and errors.append(e))
long_text = "Please read this out: " + "one two three four five six seven eight nine ten " * 4
cut = await talk_over_a_reply(call, long_text, 1.5)
await asyncio.sleep(1.0)  # an error about the client's events would be here by now
b = barge_ins[0]  # the beeps may go on interrupting the replies to themselves until the mute lands
assert b["truncated"] and not errors and cut["audio_end_ms"] == b["played_ms"] > 0, (barge_ins, errors, cut)
assert call.metrics.barge_ins[0].played_ms == b["played_ms"]
print("BARGE-IN over", b["transport"], "played", b["played_ms"], "ms of", b["produced_ms"])
print("received; cancelled", b["cancelled"])
call.muted = False
