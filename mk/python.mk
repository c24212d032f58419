# Python host (hosts/python): installs the package with pip into a virtual
# environment under the target folder (which proves `pip install
# ./hosts/python` works), type-checks it with mypy --strict, and runs the
# pytest suite against every built backend (tests skip those whose server
# is unreachable). Owned by the Python host; included by the Makefile.

PYTHON ?= python3
PY_BUILD_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))
# The cargo profile folder holding the plugin .so files the tests load.
PY_TARGET_DIR ?= $(PY_BUILD_DIR)/debug
# --system-site-packages: a pytest installed for the system Python (as
# .ci/run does) is used rather than downloaded again.
PY_VENV := $(PY_BUILD_DIR)/python-venv
PY_TEST_PACKAGES = $(patsubst backends/%/Cargo.toml,bext-locking-%,$(wildcard backends/*/Cargo.toml)) \
	bext-locking-fixture-panicky bext-locking-fixture-no-entry \
	bext-locking-fixture-bad-abi bext-locking-fixture-small-struct bext-locking-fixture-null-slot \
	bext-locking-fixture-abi-1-0 bext-locking-fixture-abi-1-1
PY_TEST_ENV = RUST_BACKTRACE=0 BEXT_TARGET_DIR=$(PY_TARGET_DIR) PYTHONDONTWRITEBYTECODE=1

.PHONY: python-test python-venv
test: python-test

python-venv:
	@test -x $(PY_VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(PY_VENV)
	@$(PY_VENV)/bin/python -c 'import pytest' 2>/dev/null || $(PY_VENV)/bin/pip install -q pytest
	@$(PY_VENV)/bin/python -c 'import mypy' 2>/dev/null || $(PY_VENV)/bin/pip install -q mypy

python-test: python-venv
	$(CARGO) build $(addprefix -p ,$(PY_TEST_PACKAGES))
	$(PY_VENV)/bin/pip install -q --force-reinstall --no-deps ./hosts/python
	cd hosts/python && $(PY_VENV)/bin/python -m mypy --strict --no-incremental src/bextlock
	cd hosts/python/tests && $(PY_TEST_ENV) $(PY_VENV)/bin/python -m pytest -q -p no:cacheprovider
