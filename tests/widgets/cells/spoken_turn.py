# Cells of a notebook the browser tests write and run in JupyterLab (tests/jupyterlab.py notebook_cells):
# each '# %%' starts a cell. A helper for the notebooks that need one clean spoken turn from the page.


# %%
async def one_spoken_turn(call, turn_detection, until):
    """Chromium's fake microphone beeps every 500 ms, without end. For one clean turn: ``turn_detection`` set
    while muted, then the microphone open until the VAD hears speech and muted again at once (so the speech
    stops and the turn ends), then wait for the event ``until``."""
    call.muted = True
    call.update_session(audio={"input": {"turn_detection": turn_detection}})
    await call.wait_for("session.updated", timeout=10)
    stop = call.events.on(lambda e: e["type"] == "input_audio_buffer.speech_started" and setattr(call, "muted", True))
    call.muted = False
    try:
        await call.wait_for(until, timeout=20)
    finally:
        stop()
