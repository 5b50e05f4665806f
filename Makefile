# Two commands for a newcomer: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench soak setup clean sandbox test-debs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the packaging metadata changes.
$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[wasm,test,pki,cluster,mqtt,hub]'
	touch $(STAMP)

setup: $(STAMP) sandbox

# The plugin sandbox component (componentize-py, ~7 s, progress printed). The build script
# caches it by the hash of the WIT world and the guest sources, so this is instant when current.
sandbox: $(STAMP)
	$(PY) -m plugins.sandbox.build

demo: setup
	$(PY) -m actors.cli demo

# As root, the Debian packages the suite needs (sshd, rsync, ip, shellcheck for the deploy
# tests; chromium, promtool, an emoji font for the dashboard tests), installed only when
# missing; without root it does nothing and those tests skip.
test-debs:
	@bash tests/install-debs.sh

# Three workers on any machine: the suite mostly waits (outages, elections, timeouts, a browser),
# so a third worker on two cores still shortens it. One file's tests stay on one worker (their
# module fixtures are built once); labs of network namespaces side by side take turns picking
# their subnets (tests/cluster/netns.py).
test: setup test-debs
	$(PY) -m pytest -n 3 --dist loadfile $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m bench.run

# A Pi Zero's release install, as the deploy scripts make it: the package and its requirements,
# no extra. The development venv's test extra brings playwright's greenlet, which Pyro5's client
# imports when present (about 1 MB per node); no board has it. The memory soak runs the demo's
# native node with this one (its WASM nodes keep the development venv and its plugin sandbox).
NATIVE_VENV := .venv-native
$(NATIVE_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(NATIVE_VENV)
	$(NATIVE_VENV)/bin/python -m pip install --quiet -e .
	touch $@

# The 30-minute memory soak: the demo's three nodes after 10 minutes, sampled every 30 s (about 41 min).
soak: setup $(NATIVE_VENV)/.installed
	$(PY) -m bench.bench_nodes --native-python $(NATIVE_VENV)/bin/python --warmup 600 --seconds 1800 --interval 30 \
		--output bench/results-soak.json

clean:
	rm -rf $(VENV) $(NATIVE_VENV) .state build dist *.egg-info plugins/sandbox/build
