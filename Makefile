# dsac_ros: `make demo` runs the main job end to end; `make test` runs the whole suite.
# Both set everything up first (make setup is idempotent and fast when already done).

PYTHON ?= python3
VENV := .venv
RUN := scripts/ros_env.sh
PYTEST_ARGS ?=

.PHONY: setup test demo bench clean help

help:
	@echo "make setup  - virtual environment, pinned dependencies, colcon build into install/"
	@echo "make test   - setup, then the whole test suite"
	@echo "make demo   - setup, then the end-to-end demo (render, map, localise, report)"
	@echo "make bench  - setup, then the benchmarks under bench/ (JSON in bench/results/)"
	@echo "make clean  - remove build products (keeps .venv and the cache)"

setup:
	@PYTHON=$(PYTHON) bash scripts/setup.sh

test: setup
	@$(RUN) $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

demo: setup
	@$(RUN) $(VENV)/bin/python scripts/demo.py

bench: setup
	@$(RUN) $(VENV)/bin/python scripts/run_benchmarks.py

clean:
	rm -rf build install log .pytest_cache
