# The one benchmark report (owned by bench/). `make bench` rebuilds every
# backend and the runner in release mode, runs the loader bench, then each
# backend's acquire+release benchmark (in-process, through the .so, raw
# client, rslock; for memory also the cost of counting statistics), and rewrites docs/BENCHMARKS.md and
# docs/benchmarks/pairs.svg. Not part of `make test`.
#
#   make bench                         everything (a few minutes)
#   make bench BENCH_ONLY=redis,pg     some sections (memory sqlite redis pg etcd mysql nats async wait python loader startup)
#   BENCH_SECS=3 BENCH_ROUNDS=10       time per side per group, and its rounds
#   make bench BENCH_ONLY=wait BENCH_WAIT_SECS=0.5 BENCH_WAIT_FIFO=200
#                                      the wait section (hand-off latency, herd, FIFO; about 90 s
#                                      by default), smaller; also BENCH_WAIT_WAITERS=1,10,100,
#                                      BENCH_WAIT_HOLD_MS, BENCH_WAIT_HERD_SECS, BENCH_WAIT_FIFO_SECS,
#                                      BENCH_WAIT_BACKENDS=memory,sqlite,redis,pg,etcd (add mysql,nats)
#
# One backend alone, printed instead of written:
#   target/release/bext-bench-redis

BENCH_DIR := $(or $(CARGO_TARGET_DIR),target)/release
BENCH_BACKENDS := memory sqlite redis pg etcd mysql nats
# One cargo invocation, so each .so and its linked-in copy in the runner
# are built with the same dependency features.
BENCH_PACKAGES := bext-locking-bench $(addprefix bext-locking-,$(BENCH_BACKENDS)) \
	bext-locking-fixture-reload-v1 bext-locking-fixture-reload-v2
BENCH_LOADER_OUT := $(BENCH_DIR)/bench-loader.txt
BENCH_STARTUP_OUT := $(BENCH_DIR)/bench-startup.txt
BENCH_ONLY ?=
export BENCH_ONLY BENCH_SECS BENCH_ROUNDS BENCH_WAIT_SECS BENCH_WAIT_WAITERS BENCH_WAIT_HOLD_MS \
	BENCH_WAIT_HERD_SECS BENCH_WAIT_FIFO BENCH_WAIT_FIFO_SECS BENCH_WAIT_BACKENDS

# The Python section runs in its own virtual environment with the peers
# it is compared with (python-redis-lock, pottery) and bextlock installed
# from hosts/python; without PyPI the section is reported as not measured.
BENCH_VENV := $(abspath $(or $(CARGO_TARGET_DIR),target))/bench-venv
BENCH_PY_PEERS := redis python-redis-lock pottery

.PHONY: bench-tools bench-build bench-loader bench-python bench-startup

bench: bench-build bench-loader bench-python bench-startup
	BENCH_PYTHON=$(BENCH_VENV)/bin/python BEXT_PLUGIN_DIR=$(abspath $(BENCH_DIR)) \
		$(BENCH_DIR)/bext-locking-bench --out docs/BENCHMARKS.md --loader-output $(BENCH_LOADER_OUT) \
		--startup-output $(BENCH_STARTUP_OUT)

bench-python:
	@if [ -z "$(BENCH_ONLY)" ] || echo ",$(BENCH_ONLY)," | grep -q ',python,'; then \
		test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV); \
		$(BENCH_VENV)/bin/pip install -q $(BENCH_PY_PEERS) && \
		$(BENCH_VENV)/bin/pip install -q --force-reinstall --no-deps ./hosts/python || \
		echo "bench-python: could not install the Python peers; the section will say why"; \
	fi

bench-tools: etcd-server
	@command -v redis-server >/dev/null 2>&1 && command -v valgrind >/dev/null 2>&1 && \
		command -v hyperfine >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server valgrind hyperfine)

# The memory .so once more with the ffi feature `uncounted`, for the cost
# of counting statistics, built first and copied to a subfolder (so nothing
# that lists the plugins takes it for one); the normal build then puts the
# counting .so back in place. Cargo keeps both feature sets' artifacts, so
# neither rebuilds the other. The benchmark checks which is which.
bench-build: bench-tools
	$(CARGO) build --release -p bext-locking-memory --features uncounted
	@mkdir -p $(BENCH_DIR)/uncounted
	cp $(BENCH_DIR)/libbext_locking_memory.so $(BENCH_DIR)/uncounted/
	$(CARGO) build --release $(addprefix -p ,$(BENCH_PACKAGES)) -p bext-lock

# `bext-lock run sqlite -- true` against `flock(1) FILE true` (bench/startup.py,
# which anyone can rerun by hand); its output is embedded in the report.
bench-startup: bench-build
	@rm -f $(BENCH_STARTUP_OUT)
	@if [ -z "$(BENCH_ONLY)" ] || echo ",$(BENCH_ONLY)," | grep -q ',startup,'; then \
		echo "python3 bench/startup.py --build $(BENCH_DIR)"; \
		python3 bench/startup.py --build $(BENCH_DIR) > $(BENCH_STARTUP_OUT) && cat $(BENCH_STARTUP_OUT); \
	fi

# Scanning 50 plugins and hot reload (loader/benches/loader.rs); its output
# is embedded in the report. Skipped when BENCH_ONLY leaves out `loader`.
bench-loader: bench-build
	@rm -f $(BENCH_LOADER_OUT)
	@if [ -z "$(BENCH_ONLY)" ] || echo ",$(BENCH_ONLY)," | grep -q ',loader,'; then \
		echo "$(CARGO) bench -p bext-locking-loader --bench loader"; \
		$(CARGO) bench -p bext-locking-loader --bench loader > $(BENCH_LOADER_OUT) && cat $(BENCH_LOADER_OUT); \
	fi
