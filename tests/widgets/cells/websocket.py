# Cells of a notebook the browser tests write and run in JupyterLab (tests/jupyterlab.py notebook_cells):
# each '# %%' starts a cell. After setup.py, in a page without WebRTC: the call falls back to the WebSocket.

# %%
call = BrowserCall(keys, base_url=backend.base_url, on_frontend=backend.allow_page)
call

# %%
notices = []
call.events.on(lambda event: event["type"].startswith("rtkit.") and notices.append(event))
call.muted = True  # a text turn: the fake microphone's beeps would interrupt the reply
await call.connect()
assert call.transport_name == "websocket" and notices[0]["type"] == "rtkit.transport_fallback", notices
assert "no WebRTC" in call.message, call.message
call.send_text("Hello over the WebSocket")
done = await call.wait_for("response.done", timeout=15)
assert done["response"]["status"] == "completed", done
print("FELL BACK to", call.transport_name, "-", call.message)
