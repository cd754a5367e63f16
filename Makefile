# Two commands matter: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow check lint typecheck test-fast test-docker bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev,samples]'
	touch $(STAMP)

venv: $(STAMP)

## The main job: the dashboard on the sample project, local backend, no Docker needed.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## The test suite but its heavy cases (docker-marked tests need dockerd; started here).
test: $(STAMP)
	scripts/install-system-deps.sh
	scripts/ensure-docker.sh || echo "docker engine unavailable: docker-marked tests will report why"
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow" tests

## The heavy cases alone (real Swarm pushes, second stacks, load, live monitors); CI runs them too.
test-slow: $(STAMP)
	scripts/install-system-deps.sh
	scripts/ensure-docker.sh || echo "docker engine unavailable: docker-marked tests will report why"
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m slow tests

## The docker-marked tests alone (the first run makes the base image and builds the images).
test-docker: $(STAMP)
	scripts/install-system-deps.sh
	scripts/ensure-docker.sh
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m docker tests

## The fast tier: no stack, no engine, no real servers (fakes honour the clients' contracts); < 2 min.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not docker and not slow and not integration" tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/devloop.py
	$(BIN)/python bench/monitoring.py
	$(BIN)/python bench/push.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
