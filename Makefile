# Quick start: `make demo` runs the main job on the embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo venv clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Browser tests (rating app, reports) drive Debian's Chromium through playwright; where it cannot be
# installed (no root, no apt) they skip with a reason. `playwright install` is never run.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "chromium could not be installed: browser tests will skip"; \
	else echo "no /usr/bin/chromium and no root apt-get: browser tests will skip"; fi

test: $(STAMP) chromium
	$(PY) -m pytest -q --durations=15

demo: $(STAMP)
	$(PY) -m calibration_world.demo --out runs/demo

clean:
	rm -rf runs/demo
