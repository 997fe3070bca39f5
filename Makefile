# Stratus: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench clean

## run: install into .venv and start the whole stack on embedded defaults (Ctrl-C stops it)
run: $(VENV)/.installed
	$(BIN)/stratus up

## test: install what the tests need (Debian packages for the hypervisor tests too) and run them
##       all, on TEST_WORKERS pytest-xdist workers (`make test TEST_WORKERS=0` runs them in one)
TEST_WORKERS ?= 4
test: $(VENV)/.installed-test
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

## lint: ruff and mypy, as CI runs them
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: the deploy benchmark (200 VMs against a bare-workflow baseline)
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/deploy.py

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	.ci/install-system-packages || echo "WARNING: Debian packages for the hypervisor tests did not install; those tests will skip and say why"
	$(BIN)/python -m pip install --quiet -e '.[dev,hypervisors]' || echo "WARNING: hypervisor libraries did not install; their tests will skip and say why"
	touch $@

clean:
	rm -rf $(VENV) .stratus .pytest_cache .mypy_cache .ruff_cache
