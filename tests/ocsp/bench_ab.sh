#!/bin/bash
# Paired A/B benchmark of two builds of smartcert-ocspd on one store:
#   bench_ab.sh BASE_BUILDDIR NEW_BUILDDIR
# Both daemons run at once on two ports of 127.0.0.1 and are measured in
# alternating rounds (wrk -c8, wrk -c64 GET keep-alive; ab -c8 POST without
# keep-alive), so that both see the same background load on a shared
# machine.  A base build of an older commit:
#   git archive COMMIT | tar -x -C /tmp/base && cd /tmp/base &&
#   meson setup build-bench --buildtype=release && ninja -C build-bench
# Environment: AB_ROUNDS (5), AB_CERTS (100000), AB_SECONDS (5), AB_DIR
# (work directory, default /tmp/smartcert-ab; removed at the end).
set -euo pipefail
BASE=${1:?usage: bench_ab.sh BASE_BUILDDIR NEW_BUILDDIR} CUR=${2:?usage: bench_ab.sh BASE_BUILDDIR NEW_BUILDDIR}
ROUNDS=${AB_ROUNDS:-5} CERTS=${AB_CERTS:-100000} SECS=${AB_SECONDS:-5}
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
B64=$(python3 -c 'import base64,sys,urllib.parse; print(urllib.parse.quote(base64.b64encode(open(sys.argv[1],"rb").read()).decode(), safe=""))' "$W/req.der")
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
wrk_rps_p99() { wrk -t2 -c"$1" -d"${SECS}s" --latency "$2" | awk '/Requests\/sec/{r=$2} / 99%/{p=$2} END{print r, p}'; }
for r in $(seq "$ROUNDS"); do
	for side in "base $P_BASE" "new $P_CUR"; do
		set -- $side
		url="http://127.0.0.1:$2/ocsp/$B64"
		c8=$(wrk_rps_p99 8 "$url")
		c64=$(wrk_rps_p99 64 "$url")
		abr=$(ab -q -c8 -n 20000 -p "$W/req.der" -T application/ocsp-request "http://127.0.0.1:$2/ocsp" 2>/dev/null |
		      awk '/Requests per second/{print $4}')
		echo "round $r $1: wrk -c8 $c8 | wrk -c64 $c64 | ab -c8 POST $abr | load $(cut -d' ' -f1 /proc/loadavg)"
	done
done
