# Fuzzing the C entry points of the backends that need no server (owned by
# fuzz/; docs/FUZZING.md tells the whole story).
#
#   make fuzz-short   every target for FUZZ_SHORT_SECONDS (part of `make test`;
#                     5 targets x 24 s keeps the 2 minutes 4 x 30 s took)
#   make fuzz-long    every target for FUZZ_LONG_SECONDS, growing fuzz/corpus
#   make fuzz-cmin    minimise fuzz/corpus after a long run, before committing
#
# Every run starts from fuzz/corpus/<target> (grown by long runs, minimised)
# and fuzz/seeds/<target> (written by hand: huge, deep, NUL and invalid
# UTF-8 cases; never minimised, so they always run).
#
# cargo fuzz builds with -Zsanitizer=address; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept that flag, so no nightly is needed.

FUZZ_TARGETS := create try_lock handle sequence admin
FUZZ_SHORT_SECONDS ?= 15
FUZZ_LONG_SECONDS ?= 3600
FUZZ_ENV := RUSTC_BOOTSTRAP=1
# -timeout: an input that runs this long is a hang (every lock the targets
# rely on has a 600 s TTL, far past it).
FUZZ_FLAGS := -timeout=20 -print_final_stats=1
FUZZ_LOG_DIR := $(or $(CARGO_TARGET_DIR),target)/fuzz-logs

.PHONY: fuzz-tools fuzz-build fuzz-short fuzz-long fuzz-cmin

test: fuzz-short

fuzz-tools:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz-build: fuzz-tools
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(FUZZ_ENV) $(CARGO) fuzz build

# New inputs go to a scratch folder, so the committed corpus stays as it is;
# a failing input is saved under fuzz/artifacts/<target>/.
fuzz-short: fuzz-build
	@mkdir -p $(FUZZ_LOG_DIR)
	@set -e; for t in $(FUZZ_TARGETS); do \
		scratch=$$(mktemp -d); log=$(FUZZ_LOG_DIR)/$$t.log; \
		echo "fuzz $$t for $(FUZZ_SHORT_SECONDS) s (log: $$log)"; \
		if ! $(FUZZ_ENV) $(CARGO) fuzz run $$t $$scratch fuzz/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_SHORT_SECONDS) $(FUZZ_FLAGS) >$$log 2>&1; then \
			tail -n 80 $$log; rm -rf $$scratch; echo "fuzz $$t FAILED"; exit 1; \
		fi; \
		grep -E '^#[0-9]+[[:space:]]+DONE' $$log || true; \
		rm -rf $$scratch; \
	done

# Grows the committed corpus; run fuzz-cmin afterwards and commit fuzz/corpus.
fuzz-long: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t for $(FUZZ_LONG_SECONDS) s"; \
		$(FUZZ_ENV) $(CARGO) fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_LONG_SECONDS) -rss_limit_mb=4096 $(FUZZ_FLAGS); \
	done

fuzz-cmin: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do $(FUZZ_ENV) $(CARGO) fuzz cmin $$t fuzz/corpus/$$t; done
