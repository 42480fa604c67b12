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

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/count_bench.py

clean:
	rm -rf $(VENV) .pytest_cache
