# Two entry points: `make demo` (parse the example photo with the bundled model) and `make test`.
# Both build their own virtual environment in .venv from pyproject.toml + constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pins torch==2.13.0 (the local CPU wheel here); users elsewhere can point this at their own file.
CONSTRAINTS ?= constraints.txt
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: demo test lint env clean-env chromium

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	touch $@

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/fpliif parse src/fpliif/assets/astronaut.jpg --out out --overlay --format json --overwrite
	@echo "demo: wrote out/astronaut_overlay.png, out/astronaut_labels.png and out/astronaut.json"

# The browser test drives Debian's chromium (Playwright never downloads its own browser here). `make test`
# installs it with apt-get when none is on PATH; `make test NO_CHROMIUM=1` skips that (the browser test skips).
NO_CHROMIUM ?=
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; } || \
	  echo "chromium could not be installed: the browser test will skip"

test: $(STAMP) $(if $(NO_CHROMIUM),,chromium)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

clean-env:
	rm -rf $(VENV)
