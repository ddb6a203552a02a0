# Two entry points: `make serve` (set up, then start the server with the embedded avatar) and
# `make test` (set up, then run the whole test suite). Both are idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup serve test
setup:
	bash scripts/bootstrap.sh $(VENV)

serve: setup
	$(VENV)/bin/syncvid serve

test: setup
	$(PY) -m pytest -q
