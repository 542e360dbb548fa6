# Cells of a notebook the browser tests write and run in JupyterLab (tests/jupyterlab.py notebook_cells):
# each '# %%' starts a cell. After setup.py, with the microphone denied: the call says so and raises.

# %%
call = BrowserCall(keys, base_url=backend.base_url, on_frontend=backend.allow_page)
call

# %%
try:
    await call.connect()
except MicrophoneDeniedError as exc:
    print("RAISED", type(exc).__name__ + ":", exc)
    assert call.state == "failed" and "Microphone access is blocked" in call.message
else:
    raise AssertionError("connected without a microphone")
