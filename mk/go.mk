# Go host (hosts/go): go vet, gofmt, go test -race, and a second run with
# cgo's full pointer checks. Owned by the Go host; included by the Makefile.
# The tests include building a program in a temporary folder outside the
# repository against this module (a `replace` line, GOPROXY=off), as
# docs/GO.md tells users to.

GO ?= go
# The cargo profile folder holding the plugin .so files the tests load.
GO_TARGET_DIR ?= $(abspath $(or $(CARGO_TARGET_DIR),target))/debug
# Every backend (tests skip those whose server is unreachable) and the
# fixtures the Go tests load.
GO_TEST_PACKAGES = $(patsubst backends/%/Cargo.toml,bext-locking-%,$(wildcard backends/*/Cargo.toml)) \
	bext-locking-fixture-panicky bext-locking-fixture-no-entry \
	bext-locking-fixture-bad-abi bext-locking-fixture-small-struct bext-locking-fixture-null-slot \
	bext-locking-fixture-abi-1-0 bext-locking-fixture-abi-1-1 bext-locking-fixture-lease-file
# No module downloads: the module uses the standard library only.
GO_TEST_ENV = RUST_BACKTRACE=0 BEXT_TARGET_DIR=$(GO_TARGET_DIR) GOPROXY=off GOFLAGS=-mod=readonly

.PHONY: go-test
test: go-test

go-test:
	command -v $(GO) >/dev/null 2>&1 || (apt-get update && apt-get install -y golang-go)
	$(CARGO) build $(addprefix -p ,$(GO_TEST_PACKAGES))
	cd hosts/go && $(GO_TEST_ENV) $(GO) vet ./...
	@cd hosts/go && unformatted="$$(gofmt -l .)" && \
		if [ -n "$$unformatted" ]; then echo "gofmt -l: not formatted: $$unformatted"; exit 1; fi
	cd hosts/go && $(GO_TEST_ENV) $(GO) test -race -count=1 ./...
	@# cgocheck=2 moved from GODEBUG to GOEXPERIMENT in Go 1.21.
	cd hosts/go && case "$$($(GO) env GOVERSION)" in \
		go1.1[0-9]*|go1.20*) cgocheck="GODEBUG=cgocheck=2" ;; \
		*) cgocheck="GOEXPERIMENT=cgocheck2" ;; \
	esac && echo "go test with $$cgocheck" && \
		env $$cgocheck $(GO_TEST_ENV) $(GO) test -count=1 ./...
