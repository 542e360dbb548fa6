# Cells of a notebook the browser tests write and run in JupyterLab (tests/jupyterlab.py notebook_cells):
# each '# %%' starts a cell. After call.py and barge_in.py: a dropped call comes back with a fresh key, and no
# key reached the widget's state.

# %%
before = emu.keys.issued
back = asyncio.ensure_future(call.wait_for_state("connected", timeout=30))
assert await emu.drop_call() == 1
change = await back
assert "disconnected" in states and states.count("connected") >= 2 and emu.keys.issued > before, states
print("RECOVERED at attempt", change.attempt, "- keys issued", before, "->", emu.keys.issued)

# %%
widget_state = json.dumps(call.widget.get_state(), default=str)
assert not re.findall(r"ek_[A-Za-z0-9]{8,}", widget_state) and not [k for k in minted if k in widget_state]
print("ALL CHECKS PASSED")
