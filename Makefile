# Two entry points: `make serve` (set up, then start the server with the default avatar) and
# `make test` (set up, then run the whole test suite). Both are idempotent; CI runs `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test-packages serve test
setup:
	bash scripts/bootstrap.sh $(VENV)

# Debian's espeak-ng and chromium for the tests that use them (skipped and named without them)
test-packages:
	bash scripts/system_packages.sh

serve: setup
	$(VENV)/bin/syncvid serve

test: setup test-packages
	$(PY) -m pytest -q
