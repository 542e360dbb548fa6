# Cells of a notebook the browser tests write and run in JupyterLab (tests/jupyterlab.py notebook_cells):
# each '# %%' starts a cell. After setup.py: the ScenarioPanel provokes each classic failure on a browser call.

# %%
from rtkit.widgets import ConnectionPanel, ScenarioPanel


async def expired_first():  # the first key expires on its way to the page: the API answers the browser 401
    key = await keys()
    if len(minted) == 1:
        emu.keys.expire(key.value)
    return key


call = BrowserCall(
    expired_first,
    base_url=backend.base_url,
    on_frontend=backend.allow_page,
    reconnect=ReconnectPolicy(max_attempts=4, initial_delay=0.2),
)
call.muted = True  # scenarios, not a conversation: the fake microphone's beeps would keep the VAD busy
panel, scenarios = ConnectionPanel(call), ScenarioPanel(call, backend, timeout=30)
display(panel, scenarios)

# %%
await panel.connect()
assert call.state == "connected" and len(minted) == 2 and len(call.metrics.connects) == 1, minted
print("FRESH KEY after the API refused the expired one; connected over", call.transport_name)

# %%
results = {}
for name in ["network_drop", "upstream_429", "upstream_500", "expire_key", "mic_denied", "webrtc_unavailable"]:
    results[name] = await scenarios.run(name)
    print("•", results[name].summary())
assert all(r.recovered for r in results.values()), {n: r.summary() for n, r in results.items()}
assert call.state == "connected" and call.transport_name == "websocket", (call.state, call.transport_name)
print("SCENARIOS PASSED", len(minted), "keys minted")

# %%
from rtkit.errors import RateLimitedError

await call.disconnect()
emu.faults.reject_next_calls(1, status=429, retry_after=2)  # the API refuses the page's POST /calls
try:
    await call.connect()
except RateLimitedError as exc:
    print("RATE LIMITED", exc.retry_after, "-", call.message)
    assert call.state == "failed" and exc.retry_after == 2
await call.connect()
emu.faults.reject_next_calls(1, status=503)  # and is down for the first reconnection after a drop
seen = []
call.states.on(lambda change: seen.append((change.state, change.attempt, change.error and change.error.code)))
back = asyncio.ensure_future(call.wait_for_state("connected", timeout=30))
await emu.drop_call()
change = await back
assert change.attempt == 2 and ("disconnected", 1, "upstream_unavailable") in seen, seen
print("API DOWN then back: connected at attempt", change.attempt)
