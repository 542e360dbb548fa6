# Cells of a notebook the browser tests write and run in JupyterLab (tests/jupyterlab.py notebook_cells):
# each '# %%' starts a cell. After setup.py with every session capped at 6 s: a text conversation resumes in
# the next session with its earlier turns, checked by asking that session.

# %%
from rtkit import ResumePolicy

call = BrowserCall(
    keys,
    {"output_modalities": ["text"]},
    base_url=backend.base_url,
    on_frontend=backend.allow_page,
    reconnect=ReconnectPolicy(max_attempts=4, initial_delay=0.2),
    resume=ResumePolicy(proactive_margin_s=None),
)
call.muted = True  # text turns: the fake microphone's beeps would start spoken ones
call

# %%
await call.connect()
for text in ["my name is Ada", "I live in Paris"]:
    call.send_text(text)
    assert (await call.wait_for("response.done", timeout=15))["response"]["status"] == "completed"
record = await call.conversation.next_resumption(timeout=30)
assert record.reason == "session_expired" and record.items_restored == 4 and record.ok, record
assert call.state == "connected" and record.old_session != record.new_session, (call.state, record)
new = call.conversation.session_id
for turn in call.conversation.turns:
    call.send({"type": "conversation.item.retrieve", "item_id": turn.item_ids[new]})
    item = (await call.wait_for("conversation.item.retrieved", timeout=10))["item"]
    assert item["role"] == turn.role and item["content"][0]["text"] == turn.text, (item, turn)
call.send_text("what is my name")
done = await call.wait_for("response.done", timeout=15)
assert done["response"]["output"][0]["content"][0]["text"] == "what is my name", done
roles = [(t.role, t.session_id == record.new_session, len(t.item_ids)) for t in call.conversation.turns]
print("RESUMED", record.reason, record.items_restored, "items;", roles)
