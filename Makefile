# The two set-up commands of README.md: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/diti-sd: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned to the release the tests and the demo's figures were made with, so that a fresh set-up
	# reproduces them; the package itself asks only torch>=2.4.
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

.PHONY: install demo test lint
install: $(BIN)/diti-sd

demo: install
	$(BIN)/diti-sd demo --out reports/demo

# the slowest tests are printed so the suite's 10-minute budget is watched where it is spent
test: install
	$(BIN)/python -m pytest -q -n 2 --durations=15

lint: install
	$(BIN)/ruff check .
