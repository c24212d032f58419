# bext-locking: the two commands that matter are at the top of README.md.
#   make demo   - the main job on the embedded default
#   make test   - everything CI runs
# Component fragments live in mk/*.mk (one per area) so each area owns its targets.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build release test lint fmt-check clippy unit demo bench header header-check install clean

all: build

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --workspace --release

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint: fmt-check clippy

# Plugins (.so) must exist before the tests that load them.
unit: build
	$(CARGO) nextest run --workspace --profile ci

# Fragments add their own prerequisites to `test` (test: c-test, go-test, ...).
test: lint unit

-include mk/*.mk
