#!/bin/bash
# Paired A/B benchmark of two builds of smartcert-ocspd on one store:
#   bench_ab.sh BASE_BUILDDIR NEW_BUILDDIR
# Both daemons run at once on two ports of 127.0.0.1 and are measured in
# alternating rounds (which goes first alternates too): wrk -c8 and -c64
# GET keep-alive of one pre-signed answer, wrk -c8 over AB_ANSWERS
# different pre-signed answers (each request a different one), ab -c8 POST
# without keep-alive; so that both see the same background load on a
# shared machine.  A base build of an older commit:
#   git archive COMMIT | tar -x -C /tmp/base && cd /tmp/base &&
#   meson setup build-bench --buildtype=release && ninja -C build-bench
# Environment: AB_ROUNDS (5), AB_CERTS (100000), AB_ANSWERS (2000),
# AB_SECONDS (5), AB_DIR (work directory, default /tmp/smartcert-ab;
# removed at the end).
set -euo pipefail
BASE=${1:?usage: bench_ab.sh BASE_BUILDDIR NEW_BUILDDIR} CUR=${2:?usage: bench_ab.sh BASE_BUILDDIR NEW_BUILDDIR}
ROUNDS=${AB_ROUNDS:-5} CERTS=${AB_CERTS:-100000} SECS=${AB_SECONDS:-5} ANSWERS=${AB_ANSWERS:-2000}
W=${AB_DIR:-/tmp/smartcert-ab}
for t in wrk ab curl openssl; do
	command -v $t >/dev/null || { echo "SKIP: $t missing (SMARTCERT_BENCH_DEPS=1 scripts/install-deps.sh)"; exit 77; }
done
rm -rf "$W"; mkdir -p "$W"; unset SOFTHSM2_CONF
"$CUR/tools/smartcert" init --dir "$W/d" --json >/dev/null
export SMARTCERT_CONF=$W/d/smartcert.conf
printf '\n[ocsp]\nsign_ahead_per_second = 0\n' >>"$SMARTCERT_CONF"
"$CUR/tests/ocsp/ocsp-bench-fill" "$SMARTCERT_CONF" "$CERTS" "$W/serials.txt" >/dev/null
GOOD=$(awk '$1=="good"{print $2; exit}' "$W/serials.txt")
openssl ocsp -issuer "$W/d/ca/issuing-ca.pem" -serial "0x$GOOD" -no_nonce -reqout "$W/req.der" >/dev/null
b64url() { python3 -c 'import base64,sys,urllib.parse; print(urllib.parse.quote(base64.b64encode(open(sys.argv[1],"rb").read()).decode(), safe=""))' "$1"; }
B64=$(b64url "$W/req.der")
awk '$1=="good"{print $2}' "$W/serials.txt" | head -n "$ANSWERS" | while read -r s; do
	openssl ocsp -issuer "$W/d/ca/issuing-ca.pem" -serial "0x$s" -no_nonce -reqout "$W/r.der" >/dev/null
	echo "/ocsp/$(b64url "$W/r.der")"
done >"$W/paths.txt"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_BASE=$(port) P_CUR=$(port)
"$BASE/tools/smartcert-ocspd" --config "$SMARTCERT_CONF" --foreground --listen "127.0.0.1:$P_BASE" 2>"$W/base.log" &
PID_BASE=$!
"$CUR/tools/smartcert-ocspd" --config "$SMARTCERT_CONF" --foreground --listen "127.0.0.1:$P_CUR" 2>"$W/cur.log" &
PID_CUR=$!
trap 'kill $PID_BASE $PID_CUR 2>/dev/null; wait; rm -rf "$W"' EXIT
for p in $P_BASE $P_CUR; do
	for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$p/healthz" && break; sleep 0.05; done
	# the first answer is signed and stored: serve it pre-signed from then on
	for _ in $(seq 20); do curl -sf -o /dev/null "http://127.0.0.1:$p/ocsp/$B64"; sleep 0.05; done
done
while read -r path; do curl -sf -o /dev/null "http://127.0.0.1:$P_CUR$path"; done <"$W/paths.txt"
sleep 1   # the store writer commits behind the answers
# "req/s p99 cpu-us/request": the last is the daemon's own CPU time (user +
# system, from /proc) per request, which other load on the machine
# disturbs far less than req/s and p99 do.
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() {  # PID CMD... (wrk or ab)
	local pid=$1 t0 t1 out
	shift
	t0=$(ticks "$pid")
	out=$("$@" 2>/dev/null)
	t1=$(ticks "$pid")
	echo "$out" | awk -v t=$((t1 - t0)) -v hz="$HZ" '
		/requests in/ {n=$1} /Complete requests/ {n=$3}
		/Requests\/sec/ {r=$2} /Requests per second/ {r=$4} / 99%/ {p=$2}
		END {printf "%s %s %.2fus", r, (p == "" ? "-" : p), (n > 0 ? t * 1e6 / hz / n : 0)}'
}
for r in $(seq "$ROUNDS"); do
	if [ $((r % 2)) = 1 ]; then order="base:$P_BASE:$PID_BASE new:$P_CUR:$PID_CUR"
	else order="new:$P_CUR:$PID_CUR base:$P_BASE:$PID_BASE"; fi
	for side in $order; do
		IFS=: read -r name p pid <<<"$side"
		url="http://127.0.0.1:$p/ocsp/$B64"
		c8=$(measure "$pid" wrk -t2 -c8 -d"${SECS}s" --latency "$url")
		c64=$(measure "$pid" wrk -t2 -c64 -d"${SECS}s" --latency "$url")
		many=$(WRK_PATHS="$W/paths.txt" measure "$pid" wrk -t2 -c8 -d"${SECS}s" --latency \
		       -s "$(dirname "${BASH_SOURCE[0]}")/../lib/wrk-paths.lua" "http://127.0.0.1:$p")
		abr=$(measure "$pid" ab -q -c8 -n 20000 -p "$W/req.der" -T application/ocsp-request \
		      "http://127.0.0.1:$p/ocsp")
		echo "round $r $name: wrk -c8 $c8 | wrk -c64 $c64 | wrk -c8 over $ANSWERS answers $many |" \
		     "ab -c8 POST $abr | load $(cut -d' ' -f1 /proc/loadavg)"
	done
done
