# C side (owned by the C host): the generated header, the C hosts, install.
# Included by the Makefile. The C programs themselves are built and run
# under valgrind by the Rust tests in tests/abi (part of `make unit`).

CC ?= cc
PREFIX ?= /usr/local
DESTDIR ?=
# Where `make install` takes libraries and the CLI from. The tests install
# from their own debug folder with INSTALL_NO_BUILD=1.
INSTALL_PROFILE ?= release
INSTALL_FROM ?= $(or $(CARGO_TARGET_DIR),target)/$(INSTALL_PROFILE)
C_VERSION := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
C_STRICT := -std=c11 -Wall -Wextra -Wpedantic -Werror
C_HOSTS := example conformance stress
C_BUILD_DIR := $(or $(CARGO_TARGET_DIR),target)/c-hosts

.PHONY: header header-check c-test c-hosts c-permissions c-compat install

test: c-test

# Rewrites include/bext_locking.h from ffi/ with the pinned cbindgen.
header:
	$(CARGO) run -q -p bext-locking-header

# Fails when the committed header drifts from ffi/ (also a test in tools/header).
header-check:
	$(CARGO) run -q -p bext-locking-header -- --check

# Quick gate on top of `unit` (which runs the C programs under valgrind):
# the header is current, every C host compiles with strict flags, and the
# helper refuses a plugin file others can write (and loads it when told to),
# and the frozen ABI 1.0 C host still passes against today's plugins.
c-test: header-check c-hosts c-permissions c-compat

C_PLUGIN_DIR := $(or $(CARGO_TARGET_DIR),target)/debug

c-permissions:
	@mkdir -p $(C_BUILD_DIR)
	$(CC) $(C_STRICT) -Iinclude -Ihosts/c tests/abi/c/load_report.c -ldl -o $(C_BUILD_DIR)/load_report
	$(CARGO) build -q -p bext-locking-memory
	@set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	cp $(C_PLUGIN_DIR)/libbext_locking_memory.so "$$d/open.so"; chmod 0666 "$$d/open.so"; \
	out=$$($(C_BUILD_DIR)/load_report "$$d/open.so" || true); echo "$$out"; \
	echo "$$out" | grep -q 'refused: the file is writable by group and others (mode 0666)' || \
		{ echo "c-permissions: a world-writable plugin was not refused"; exit 1; }; \
	$(C_BUILD_DIR)/load_report --allow-insecure "$$d/open.so" | grep -q '^OK memory ' || \
		{ echo "c-permissions: BEXT_LOCKING_HOST_ALLOW_INSECURE did not load it"; exit 1; }; \
	echo "c-permissions: ok"

c-hosts:
	@mkdir -p $(C_BUILD_DIR)
	@for p in $(C_HOSTS); do \
		echo "$(CC) $(C_STRICT) hosts/c/$$p.c"; \
		$(CC) $(C_STRICT) -pthread -Iinclude -Ihosts/c hosts/c/$$p.c -ldl -o $(C_BUILD_DIR)/$$p || exit 1; \
	done

# A host built before ABI 1.1: the frozen 1.0 conformance program, compiled
# against the frozen 1.0 header alone, run against the memory and SQLite
# plugins built today (tests/abi/tests/compat.rs runs it against every
# backend under valgrind, as part of `unit`).
C_COMPAT_DIR := $(C_BUILD_DIR)/compat
C_COMPAT_LIBS := $(or $(CARGO_TARGET_DIR),target)/debug
c-compat:
	@mkdir -p $(C_COMPAT_DIR)
	$(CARGO) build -q -p bext-locking-memory -p bext-locking-sqlite
	$(CC) $(C_STRICT) -pthread tests/abi/frozen/conformance_1_0.c -ldl -o $(C_COMPAT_DIR)/conformance_1_0
	@rm -f $(C_COMPAT_DIR)/locks.db*
	@set -e; for run in 'memory|{"namespace":"c-compat"}' \
		'sqlite|{"path":"$(abspath $(C_COMPAT_DIR))/locks.db"}'; do \
		lib=$${run%%|*}; config=$${run#*|}; log=$(C_COMPAT_DIR)/$$lib.log; \
		echo "1.0 C host against $$lib"; \
		$(C_COMPAT_DIR)/conformance_1_0 $(C_COMPAT_LIBS)/libbext_locking_$$lib.so "$$config" > $$log \
			|| { grep -v '^ok ' $$log; exit 1; }; \
		tail -n 1 $$log; \
	done

# make install PREFIX=/opt/bext: headers, plugins, pkg-config file, CLI.
# Plugins and the CLI are installed stripped (a smaller file to map at every
# start); their debug info goes to a .debug/ folder beside them, linked by
# .gnu_debuglink, where gdb, perf and Rust backtraces find it by themselves.
# INSTALL_STRIP=0 installs the files as built.
INSTALL_STRIP ?= 1
OBJCOPY ?= objcopy
# $(call install_bin,FILE,DIR,MODE): install FILE into DIR, stripped, with
# DIR/.debug/<name>.debug, unless INSTALL_STRIP=0 or objcopy is missing.
define install_bin
	if [ "$(INSTALL_STRIP)" != 0 ] && command -v $(OBJCOPY) >/dev/null 2>&1; then \
		name=$$(basename "$(1)"); tmp=$$(mktemp -d); \
		install -d "$(2)/.debug"; \
		$(OBJCOPY) --only-keep-debug "$(1)" "$$tmp/$$name.debug" && \
		$(OBJCOPY) --strip-debug --strip-unneeded --add-gnu-debuglink="$$tmp/$$name.debug" "$(1)" "$$tmp/$$name" && \
		install -m 644 "$$tmp/$$name.debug" "$(2)/.debug/" && \
		install -m $(3) "$$tmp/$$name" "$(2)/"; \
		rc=$$?; rm -rf "$$tmp"; [ $$rc = 0 ] || exit $$rc; \
	else \
		install -m $(3) "$(1)" "$(2)/"; \
	fi
endef

install:
ifneq ($(INSTALL_NO_BUILD),1)
	$(CARGO) build --workspace $(if $(filter release,$(INSTALL_PROFILE)),--release,)
endif
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/bext-locking \
		$(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 include/bext_locking.h hosts/c/bext_locking_host.h $(DESTDIR)$(PREFIX)/include/
	@# Every plugin library except the test fixtures.
	@set -e; for lib in $(INSTALL_FROM)/libbext_locking_*.so; do \
		case "$$lib" in *libbext_locking_fixture_*) continue ;; esac; \
		[ -e "$$lib" ] || { echo "no plugin libraries in $(INSTALL_FROM)"; exit 1; }; \
		echo "install $$lib -> $(PREFIX)/lib/bext-locking/"; \
		$(call install_bin,$$lib,$(DESTDIR)$(PREFIX)/lib/bext-locking,755); \
	done
	@if [ -x $(INSTALL_FROM)/bext-lock ]; then \
		echo "install $(INSTALL_FROM)/bext-lock -> $(PREFIX)/bin/"; \
		$(call install_bin,$(INSTALL_FROM)/bext-lock,$(DESTDIR)$(PREFIX)/bin,755); \
	else echo "no $(INSTALL_FROM)/bext-lock: CLI not installed"; fi
	@printf '%s\n' \
		'prefix=$(PREFIX)' \
		'includedir=$${prefix}/include' \
		'libdir=$${prefix}/lib' \
		'plugindir=$${libdir}/bext-locking' \
		'' \
		'Name: bext-locking' \
		'Description: Pluggable distributed locks: C ABI header, loader helper and plugin libraries' \
		'Version: $(C_VERSION)' \
		'Cflags: -I$${includedir}' \
		'Libs: -ldl' \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/bext-locking.pc
	@echo "installed bext-locking $(C_VERSION) to $(DESTDIR)$(PREFIX)"
