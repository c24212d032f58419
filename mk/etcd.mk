# etcd backend (owned by backends/etcd). Its tests start real etcd servers
# from Debian's etcd-server; install it once before the tests run, so test
# processes started in parallel do not race for apt (they would otherwise
# install it themselves, serialised with flock).

.PHONY: etcd-server etcd-bench

unit: etcd-server

etcd-server:
	@test -x /usr/bin/etcd || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server)

# Acquire+release pairs/s through the .so versus the client directly.
etcd-bench: etcd-server
	$(CARGO) build --release -p bext-locking-etcd
	$(CARGO) bench -p bext-locking-etcd

bench: etcd-bench
