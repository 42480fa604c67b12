# `make run` and `make test` create .venv when it is missing and install the project into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install bench clean

$(BIN)/scaling: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(BIN)/scaling

install: $(BIN)/scaling

run: install
	$(BIN)/scaling search --phi 1

# Two test processes (pytest-xdist): the suite took 586-647 s in one and 368 s in two on a 2-core
# machine like CI's (2026-12-02). On the GPU machine: pytest -m gpu, in one.
test: install
	$(BIN)/python -m pytest -q -n 2

bench: install
	$(BIN)/python bench/count_bench.py

clean:
	rm -rf $(VENV) .pytest_cache
