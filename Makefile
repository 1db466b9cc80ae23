# onechance: two commands do everything on a fresh Debian machine with Python 3.11.
#   make run   - set up .venv and run the daemon: `onechance run` when an Asterisk is configured
#                (ONECHANCE_CONFIG, ONECHANCE_AMI__HOST or ONECHANCE_PBX), else `onechance demo`
#   make test  - set up .venv with the dev extras and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test lint bench clean venv deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@if [ -n "$$ONECHANCE_CONFIG$$ONECHANCE_AMI__HOST$$ONECHANCE_PBX" ]; then \
		exec $(BIN)/onechance run; \
	else \
		echo "No Asterisk configured (ONECHANCE_CONFIG, ONECHANCE_AMI__HOST): running the simulated call centre."; \
		exec $(BIN)/onechance demo; \
	fi

# The Debian packages the tests drive for real (PostgreSQL, Prometheus, Alertmanager, Chromium,
# docker-compose, systemd-analyze): installed only when missing (as root), else nothing happens.
deps:
	.ci/install-debian-deps

test: deps $(DEVSTAMP)
	$(BIN)/python -m pytest

lint: $(DEVSTAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/mypy

# Every figure of docs/performance.md and docs/reliability.md, in one run (about an hour; loopback only, every
# loop bounded): `make bench 2>&1 | tee bench.log`
bench: deps $(DEVSTAMP)
	$(BIN)/python bench/replay_throughput.py
	$(BIN)/python bench/ingest_memory.py
	$(BIN)/python bench/ingest_live.py
	$(BIN)/python bench/http_latency.py
	$(BIN)/python bench/http_load.py
	$(BIN)/python bench/shutdown.py
	$(BIN)/python bench/shutdown.py --signal KILL --rounds 5 --no-alerts
	$(BIN)/python bench/alert_latency.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/scale_pbxs.py
	$(BIN)/python bench/scale_writers.py --partitioned
	$(BIN)/python bench/fuzz.py --quiet

clean:
	rm -rf $(VENV) build *.egg-info service/*.egg-info .pytest_cache .ruff_cache .hypothesis
