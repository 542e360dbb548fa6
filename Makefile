# Two commands on a fresh Debian machine (as root, or with sudo):
#   make demo   set everything up, start the local emulator, run one spoken turn against it
#   make test   set everything up and run every test
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian packages the kit and its tests need: PortAudio for sounddevice, espeak-ng + sox for spoken
# fixtures and the emulator's voice, Chromium for the real-browser tests, Redis for the multi-instance broker.
APT_PACKAGES ?= libportaudio2 espeak-ng sox chromium redis-server

.PHONY: setup system venv demo test lint format bench clean notebooks lab pictures

setup: system venv

system:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m rtkit demo

# The notebooks run against the emulator in tests, whatever OPENAI_API_KEY the caller has set.
# Two workers, each taking whole test files (module fixtures such as JupyterLab start once): most tests wait on
# sockets and audio clocks rather than compute, so two workers halve the wall time even on two cores.
PYTEST_WORKERS ?= 2
test: setup lint
	env -u OPENAI_API_KEY -u RTKIT_AUDIO $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=15

# Re-run every notebook and save it with its outputs (plots as images), as they are committed.
notebooks: setup
	env -u OPENAI_API_KEY -u RTKIT_AUDIO $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=180 notebooks/*.ipynb

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

# Part of `make test`: the lint and the types are checked like the behaviour.
LINTED := rtkit tests benchmarks notebooks

lint: venv
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

bench: setup
	@command -v wrk >/dev/null || { if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q wrk; }
	$(PY) -m benchmarks

# The README's pictures: screenshots the browser tests write to the ignored artifacts/ (make test), copied to the
# tracked docs/img/ scaled down and palette-reduced. SOURCE:NAME pairs.
PICTURES ?= browser_call_lesson_04_browser.png:lesson_audio_levels.png \
	browser_call_connected_widget.png:browser_call_card.png \
	broker_page_spoken_turn.png:broker_demo_page.png
pictures: venv
	$(PY) docs/pictures.py $(PICTURES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
