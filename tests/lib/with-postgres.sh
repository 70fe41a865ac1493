#!/usr/bin/env bash
# with-postgres.sh COMMAND [ARG...]
#
# Runs COMMAND against a PostgreSQL server of its own: initdb and pg_ctl in
# a fresh temporary directory, the server under an unprivileged account when
# this runs as root (PostgreSQL refuses root), listening on a Unix socket in
# that directory only (no TCP port at all).  COMMAND sees libpq's
# environment (PGHOST, PGUSER, PGDATABASE) and SC_TEST_STORE=postgresql, and
# SC_TEST_PG_CRASH: a script that crashes the server (immediate stop, no
# shutdown checkpoint) and starts it again, which runs crash recovery.  Its
# exit status is this script's.  The server and its files go when it ends.
# Exit 77 (skipped) when no PostgreSQL server is installed.
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "with-postgres: no PostgreSQL server here: apt-get install postgresql" >&2
  exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sc-pg.XXXXXX")
# The server runs without what the sanitizer passes preload into the tests
# (a preloaded libasan hangs postgres at start).
as=(env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS -u TSAN_OPTIONS)
if [ "$(id -u)" -eq 0 ]; then
  account=smartcert-pgtest
  if ! id "$account" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$account" 2>/dev/null ||
      id "$account" >/dev/null
  fi
  chown "$account" "$tmp"
  as+=(runuser -u "$account" --)
fi
chmod 0755 "$tmp"

stop() {
  "${as[@]}" "$bindir/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap stop EXIT
trap "exit 143" TERM INT

if ! "${as[@]}" "$bindir/initdb" -D "$tmp/data" -U smartcert -A trust -E UTF8 --no-sync \
    >"$tmp/initdb.log" 2>&1; then
  echo "with-postgres: initdb failed:" >&2
  cat "$tmp/initdb.log" >&2
  exit 1
fi
start=("${as[@]}" "$bindir/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 60
  -o "-c listen_addresses='' -k $tmp -c max_connections=200" start)
if ! "${start[@]}" >/dev/null; then
  echo "with-postgres: the server did not start:" >&2
  cat "$tmp/server.log" >&2
  exit 1
fi
{
  echo '#!/bin/sh'
  printf '%q ' "${as[@]}" "$bindir/pg_ctl" -D "$tmp/data" -m immediate stop
  echo '>/dev/null || exit 1'
  printf '%q ' "${start[@]}"
  echo '>/dev/null'
} >"$tmp/crash.sh"
chmod 0755 "$tmp/crash.sh"
export SC_TEST_PG_CRASH="$tmp/crash.sh"

export PGHOST="$tmp" PGUSER=smartcert PGDATABASE=postgres SC_TEST_STORE=postgresql
set +e
"$@"
rc=$?
set -e
if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
  echo "with-postgres: server log:" >&2
  tail -n 20 "$tmp/server.log" >&2 || true
fi
exit "$rc"
