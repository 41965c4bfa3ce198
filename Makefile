# fsguard developer entry points. Everything installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.json

WHEELHOUSE ?= wheelhouse

.PHONY: install system-deps run test test-deps lint bench clean lock openapi wheelhouse config-doc crowdsec

# Every runtime, test and dev dependency comes from requirements.lock (exact versions and
# hashes); fsguard itself is installed editable on top, without resolving anything.
$(BIN)/fsguard: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(BIN)/fsguard

# Regenerate the lock from pyproject's ranges (needs network). Commit it on its own, with why.
lock:
	$(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet uv
	.lockenv/bin/uv pip compile pyproject.toml --extra test --extra dev --generate-hashes \
		--python-version 3.11 --upgrade -o requirements.lock
	rm -rf .lockenv

# docs/config.md from the schema (tests/test_config_doc.py fails when it is stale).
config-doc: $(BIN)/fsguard
	$(BIN)/python -m shared.config_doc > docs/config.md

# Offline install material for a PBX without PyPI access: fsguard's run-time dependencies
# exactly as requirements.lock pins them (downloaded hash-checked; an sdist is built into a
# wheel here), the fsguard wheel, and requirements.lock / fsguard.lock giving every file's
# sha256. Build on the PBX's OS, architecture and Python minor version; copy the directory
# over, then: sudo deploy/install.sh --wheelhouse DIR
wheelhouse: $(BIN)/fsguard
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)/.src
	$(BIN)/python deploy/runtime_lock.py subset requirements.lock pyproject.toml > $(WHEELHOUSE)/.src/runtime.lock
	$(BIN)/pip download --quiet --no-deps --require-hashes -r $(WHEELHOUSE)/.src/runtime.lock -d $(WHEELHOUSE)/.src
	cp $(WHEELHOUSE)/.src/*.whl $(WHEELHOUSE)/
	for sdist in $(WHEELHOUSE)/.src/*.tar.gz; do \
		[ -e "$$sdist" ] || continue; \
		$(BIN)/pip wheel --quiet --no-deps -w $(WHEELHOUSE) "$$sdist" || exit 1; \
	done
	rm -rf build  # setuptools reuses build/lib: a module deleted since would ship again
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w $(WHEELHOUSE) .
	rm -rf $(WHEELHOUSE)/.src
	$(BIN)/python deploy/runtime_lock.py wheelhouse $(WHEELHOUSE)
	@echo "wheelhouse ready: $(WHEELHOUSE) (install: sudo deploy/install.sh --wheelhouse $(WHEELHOUSE))"

# Kernel tools for the firewall role and the namespace tests (Debian/Ubuntu, as root).
system-deps:
	@missing=""; for tool in ipset iptables ip nft; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ipset iptables iproute2 nftables; \
		else echo "note: missing$$missing; install ipset, iptables, nftables and iproute2 as root for the firewall role"; fi; \
	fi

install: system-deps $(BIN)/fsguard

# CrowdSec's binaries for the fleet tests (tests/crowdsec_lapi.py): Debian's package,
# unpacked into .cache/crowdsec/root without installing it (no service is started).
CROWDSEC_ROOT := .cache/crowdsec/root
crowdsec: $(CROWDSEC_ROOT)/usr/bin/crowdsec
$(CROWDSEC_ROOT)/usr/bin/crowdsec:
	mkdir -p .cache/crowdsec
	cd .cache/crowdsec && rm -f crowdsec_*.deb && (apt-get download crowdsec || (apt-get update -qq && apt-get download crowdsec))
	dpkg -x .cache/crowdsec/crowdsec_*.deb $(CROWDSEC_ROOT)
	test -x $@

run: install
	$(BIN)/fsguard run --config $(CONFIG)

# As root, the fleet tests' CrowdSec binaries come with the test command (a fresh clone's
# `make test` runs everything); otherwise they skip and say why (and fail under CI).
test-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then $(MAKE) --no-print-directory crowdsec; \
	else echo "note: run 'make crowdsec' as root for the CrowdSec fleet tests"; fi

test: install test-deps
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# openapi.yaml is generated from the typed models with the locked FastAPI (a test checks it).
openapi: install
	$(BIN)/python -m fsguard_api.openapi > openapi.yaml

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info $(WHEELHOUSE)
