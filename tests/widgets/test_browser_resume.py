"""Resume with context for the ``BrowserCall``: the notebook's browser tab (real Chromium in a real JupyterLab)
makes the call, the emulator caps its session, and the tab's next session holds the earlier turns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("anywidget", reason="needs anywidget (pip install -e '.[lab]')")

from tests.jupyterlab import SCRIPTED, Lab, run_in_lab, running_lab, write_notebook
from tests.widgets.test_browser_call import MAIN_KEY, SETUP, skip_without_browser

RESUME_CELLS = [
    SETUP.replace("api_key=os.environ", "max_session_seconds=6, api_key=os.environ"),
    """\
from rtkit import ResumePolicy
call = BrowserCall(keys, {"output_modalities": ["text"]}, base_url=backend.base_url, on_frontend=backend.allow_page,
                   reconnect=ReconnectPolicy(max_attempts=4, initial_delay=0.2),
                   resume=ResumePolicy(proactive_margin_s=None))
call.muted = True  # text turns: the fake microphone's beeps would start spoken ones
call""",
    """\
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
print("RESUMED", record.reason, record.items_restored, "items;", roles)""",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    root.mkdir()
    write_notebook(root / "resume.ipynb", RESUME_CELLS)
    env = {"RTKIT_TEST_MAIN_KEY": MAIN_KEY, "RTKIT_TEST_MINTED": str(tmp / "minted.json")}
    with running_lab(tmp, root, settings=SCRIPTED, env=env, expose_app=True) as server:
        yield server


@pytest.mark.browser
@skip_without_browser
def test_the_browser_call_resumes_after_the_cap_with_its_earlier_turns(lab: Lab) -> None:
    run = run_in_lab(lab, "resume.ipynb", allow_microphone=True, shot="resume", timeout_s=90)
    why = run.explain()
    expected = (
        "RESUMED session_expired 4 items; [('user', False, 2), ('assistant', False, 2), ('user', False, 2), "
        "('assistant', False, 2), ('user', True, 1), ('assistant', True, 1)]"
    )
    assert expected in run.output("RESUMED"), why
    assert not run.page_errors, why
