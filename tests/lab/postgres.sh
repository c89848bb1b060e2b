#!/usr/bin/env bash
# Debian's PostgreSQL for the tests that run against the PostgreSQL store:
# creates the cluster when the package made none, starts it (there is no
# systemd here), and makes a superuser role `orrery` the tests create their
# databases with. Prints that role's URL (for ORRERY_TEST_PG).
#
#   tests/lab/postgres.sh          start, print the URL
#   tests/lab/postgres.sh stop
set -euo pipefail

VER=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
[ -n "$VER" ] || { echo "postgres.sh: no PostgreSQL server (apt-get install postgresql)" >&2; exit 1; }

if [ "${1:-start}" = stop ]; then
    pg_ctlcluster "$VER" main stop 2>/dev/null || true
    exit 0
fi

if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VER main"; then
    pg_createcluster "$VER" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$VER" '$1==v && $2=="main" {print $4}' | grep -q online; then
    # Its notes ("Removed stale pid file.") must not mix with the URL.
    pg_ctlcluster "$VER" main start >&2
fi
PORT=$(pg_lsclusters -h | awk -v v="$VER" '$1==v && $2=="main" {print $3}')
runuser -u postgres -- psql -q -p "$PORT" -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orrery') THEN
    CREATE ROLE orrery LOGIN SUPERUSER PASSWORD 'orrery';
  END IF;
END $$;
SQL
# TLS under a CA of the tests' own (the store's TLS tests verify the server
# by address): a server certificate for 127.0.0.1 and localhost. Its CA is
# $TLS/ca.crt (ORRERY_TEST_PG_CA in run-all.sh).
TLS=/var/lib/postgresql/orrery-test-tls
if [ ! -f "$TLS/server.crt" ]; then
    mkdir -p "$TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=orrery test CA" \
        -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$TLS/ext"
    openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
        -CAcreateserial -days 3650 -extfile "$TLS/ext" -out "$TLS/server.crt" 2>/dev/null
    chown -R postgres:postgres "$TLS"
    chmod 600 "$TLS/server.key" "$TLS/ca.key"
fi
runuser -u postgres -- psql -q -p "$PORT" -v ON_ERROR_STOP=1 >/dev/null <<SQL
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = '$TLS/server.crt';
ALTER SYSTEM SET ssl_key_file = '$TLS/server.key';
SELECT pg_reload_conf();
SQL

echo "postgres://orrery:orrery@127.0.0.1:$PORT/postgres"
