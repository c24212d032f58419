# etcd backend (owned by backends/etcd). Its tests start real etcd servers
# from Debian's etcd-server; install it once before the tests run, so test
# processes started in parallel do not race for apt (they would otherwise
# install it themselves, serialised with flock).

.PHONY: etcd-server

unit: etcd-server

etcd-server:
	@test -x /usr/bin/etcd || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server)

# The etcd benchmark (.so versus direct gateway calls) is part of
# `make bench` (mk/bench.mk, bench/src/bin/bext-bench-etcd.rs), which
# needs etcd-server too.
