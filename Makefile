# fsguard developer entry points. Everything installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.json

.PHONY: install system-deps run test lint bench clean

$(BIN)/fsguard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(BIN)/fsguard

# Kernel tools for the firewall role and the namespace tests (Debian/Ubuntu, as root).
system-deps:
	@missing=""; for tool in ipset iptables ip; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ipset iptables iproute2; \
		else echo "note: missing$$missing; install ipset, iptables and iproute2 as root for the firewall role"; fi; \
	fi

install: system-deps $(BIN)/fsguard

run: install
	$(BIN)/fsguard run --config $(CONFIG)

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
