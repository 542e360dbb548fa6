# Cells of a notebook the browser tests write and run in JupyterLab (tests/jupyterlab.py notebook_cells):
# each '# %%' starts a cell. Helpers for the notebooks that need one clean spoken turn from the page, or a
# beep of its microphone over a reply.


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


async def talk_over_a_reply(call, text, after):
    """Ask for a reply to ``text``, let it play for ``after`` s, then open the microphone: its next beep barges
    in. Muted again once the API has truncated the item; returns the ``conversation.item.truncated`` event."""
    call.send_text(text)
    playing = "output_audio_buffer.started" if call.transport_name == "webrtc" else "response.output_audio.delta"
    await call.wait_for(playing, timeout=15)
    await asyncio.sleep(after)
    truncated = asyncio.ensure_future(call.wait_for("conversation.item.truncated", timeout=15))
    call.muted = False
    cut = await truncated
    call.muted = True
    return cut
