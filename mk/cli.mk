# bext-lock, the guard and the CLI (issue 8). The CLI's tests are plain
# cargo tests (cli/tests), run by `make unit`.

.PHONY: demo

# The README's first command: several `bext-lock run sqlite ...` processes
# at once against one temporary database, round after round; exactly one
# runs the job each round and the others skip.
demo:
	$(CARGO) build -p bext-lock -p bext-locking-sqlite
	bash cli/demo.sh $${CARGO_TARGET_DIR:-target}/debug 4 3
