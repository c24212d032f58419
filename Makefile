# bext-locking: the two commands that matter are at the top of README.md.
#   make demo   - the main job on the embedded default
#   make test   - everything CI runs
#   make check  - what a contributor runs before pushing (a few minutes)
# Component fragments live in mk/*.mk (one per area) so each area owns its targets.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build release test lint fmt-check clippy unit check examples demo bench header header-check install clean

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
test: lint unit examples

# For contributors: formatting, clippy, and the workspace's tests without
# the fault tests that kill, freeze or restart servers (nextest profile
# `check` in .config/nextest.toml lists what it leaves out). Needs the
# machine's Redis and PostgreSQL, redis-server and etcd like `make test`.
check: lint build
	$(CARGO) nextest run --workspace --profile check

# The Rust examples (examples/), built and run against the memory plugin,
# and the README's Rust code compiled as a doctest, so what a new user
# copies keeps compiling and working.
EXAMPLES_PLUGIN = $(or $(CARGO_TARGET_DIR),target)/debug/libbext_locking_memory.so
examples: build
	$(CARGO) build -p bext-locking --examples
	$(CARGO) test -q -p bext-locking --doc
	$(CARGO) run -q -p bext-locking --example quickstart -- $(EXAMPLES_PLUGIN)
	$(CARGO) run -q -p bext-locking --example tokio -- $(EXAMPLES_PLUGIN)

-include mk/*.mk
