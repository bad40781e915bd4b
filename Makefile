# pnpipsec: the two commands of the README are `make demo` and `make test`.
# Both run scripts/setup.sh first (idempotent; well under a second when already done).

VENV        := .venv
PY          := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS  ?=
FUZZ_ARGS   ?=

.PHONY: help setup test demo bench fuzz test-mp clean

help:
	@echo "make demo     set up, then run the demo: appliances, a host and a legacy device on loopback (pnp sim)"
	@echo "make test     set up, then run every test (pytest host_tests)"
	@echo "make bench    set up, then benchmark pure-Python crypto vs baselines (BENCH_ARGS=--json ...)"
	@echo "make fuzz     set up, then fuzz the node's receive path with 1,000,000 mutated captures (FUZZ_ARGS=--json ...)"
	@echo "make test-mp  only the MicroPython (WebAssembly) test modules, verbose"
	@echo "make setup    only the setup: .venv, node_modules, Debian packages (root), libreswan"

setup:
	@scripts/setup.sh

test: setup
	$(PY) -m pytest -q -ra host_tests $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/pnp sim

bench: setup
	$(VENV)/bin/pnp bench $(BENCH_ARGS)

fuzz: setup
	$(PY) -m host_tests.fuzz_node --packets 1000000 --seed 1 --workers 2 $(FUZZ_ARGS)

test-mp: setup
	node boards/wasm/runner.mjs -v

clean:
	rm -rf .stamps .pytest_cache .hypothesis
	find . -name __pycache__ -not -path './.venv/*' -not -path './node_modules/*' -prune -exec rm -rf {} +
