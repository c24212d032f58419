# mysql backend (owned by backends/mysql). Its fault tests (and the safety
# checker) start throwaway MariaDB servers from Debian's mariadb-server;
# install it once before the tests run, so test processes started in
# parallel do not race for apt. The shared server on 127.0.0.1:3306 is
# started for every session and CI run, not by this file.

.PHONY: mariadb-server

unit: mariadb-server

mariadb-server:
	@test -x /usr/sbin/mariadbd || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server)
