#!/usr/bin/env bash
# The store on PostgreSQL against the store on LMDB, in one run (a benchmark,
# not a test): run under tests/lib/with-postgres.sh, which starts the server.
#
#   with-postgres.sh bench-store-backends.sh BENCH_SIGN
#
# Two deployments that differ only in store.backend (every key group's HSM
# key made first: about 2 minutes each on SoftHSMv2), their rounds
# alternating (LMDB first, then PostgreSQL first), medians reported:
#   1. bulk enrolment (`smartcert ca enrol --batch`, P-256), users/s
#      (goal on PostgreSQL: >= 1,000 users/s);
#   2. authorised P-256 signatures/s through the module and the signing
#      service (bench-sign with SMARTCERT_BENCH_MODULE_ONLY=1), PostgreSQL
#      / LMDB (goal >= 0.7);
#   3. OCSP GET with keep-alive, one pre-signed answer, wrk -c8 (when wrk
#      is installed), PostgreSQL / LMDB (goal >= 0.9).
# Environment: BSB_ENROL_ROWS (per round, default 2000), BSB_KEYS (signing
# keys, default 2000), BSB_SIGS (per thread per run, 300), BSB_THREADS (8),
# BSB_ROUNDS (3), BSB_SECONDS (wrk duration, 5), BSB_DIR (work directory).
set -euo pipefail
BENCH_SIGN=${1:?usage: with-postgres.sh bench-store-backends.sh PATH/TO/bench-sign}
: "${SMARTCERT_BIN:?}" "${SMARTCERT_OCSPD_BIN:?}" "${SC_TEST_STORE:?run under tests/lib/with-postgres.sh}"
ROWS=${BSB_ENROL_ROWS:-2000}
KEYS=${BSB_KEYS:-2000}
SIGS=${BSB_SIGS:-300}
THREADS=${BSB_THREADS:-8}
ROUNDS=${BSB_ROUNDS:-3}
SECS=${BSB_SECONDS:-5}
W=${BSB_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bench-store-backends.XXXXXX")}
mkdir -p "$W"
unset SOFTHSM2_CONF
ocspd_pid=
trap '[ -n "$ocspd_pid" ] && kill "$ocspd_pid" 2>/dev/null; true' EXIT

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); rows $ROWS, keys $KEYS," \
  "$THREADS threads x $SIGS signatures, $ROUNDS rounds; work $W"
for b in lmdb postgresql; do
  if [ ! -f "$W/$b/smartcert.conf" ]; then
    "$SMARTCERT_BIN" init --dir "$W/$b" --store "$b" --json >/dev/null
    # every key group's HSM key up front, as in production (README,
    # "Installing"): otherwise the first enrolments make them one by one
    SMARTCERT_CONF=$W/$b/smartcert.conf "$SMARTCERT_BIN" ca key-groups >/dev/null &
  fi
done
wait

median() { python3 -c 'import statistics,sys; print(round(statistics.median(float(x) for x in sys.argv[1:]), 1))' "$@"; }
ratio() { python3 -c 'import sys; print(round(float(sys.argv[1]) / float(sys.argv[2]), 3))' "$1" "$2"; }
order() {  # round -> the two backends, alternating which goes first
  if [ $(($1 % 2)) -eq 1 ]; then echo "lmdb postgresql"; else echo "postgresql lmdb"; fi
}

# 1. bulk enrolment
declare -A enrol sign ocsp
for r in $(seq "$ROUNDS"); do
  for b in $(order "$r"); do
    csv=$W/enrol-$b-$r.csv
    # users and ID-card numbers new to both stores in every round and run
    python3 - "$csv" "$ROWS" "$r" "$$" <<'PY'
import sys
path, n, r, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) % 1000
with open(path, "w") as f:
    f.write("user_id,name,id_number,dob,profile,key_type\n")
    for i in range(n):
        f.write(f"e{run}r{r}u{i:07d},Bench {run} {r} {i},{'BCDEFGHJK'[r % 9]}{run:03d}{i:06d},"
                "1980-01-01,adult,p256\n")
PY
    rate=$(SMARTCERT_CONF=$W/$b/smartcert.conf "$SMARTCERT_BIN" ca enrol --batch "$csv" --threads 2 --json 2>"$W/enrol-$b-$r.err" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["rate_per_second"])')
    enrol[$b]="${enrol[$b]:-} $rate"
    echo "enrol round $r $b: $rate users/s"
  done
done

# 2. signing through the module (bench-sign enrols its own keys once)
for r in $(seq "$ROUNDS"); do
  for b in $(order "$r"); do
    out=$(SMARTCERT_BENCH_DIR=$W/$b SMARTCERT_BENCH_MODULE_ONLY=1 SMARTCERT_BENCH_KEYS=$KEYS \
      SMARTCERT_BENCH_RSA_KEYS=1 SMARTCERT_BENCH_THREADS=$THREADS SMARTCERT_BENCH_SIGS=$SIGS \
      SMARTCERT_BENCH_WARM_RUNS=1 SMARTCERT_START_SIGND=1 "$BENCH_SIGN" | tail -n 1)
    rate=$(sed -n 's/^module P-256: \([0-9]*\) authorised.*/\1/p' <<<"$out")
    [ -n "$rate" ] || { echo "bench-sign on $b: $out" >&2; exit 1; }
    sign[$b]="${sign[$b]:-} $rate"
    echo "sign round $r $b: $rate sig/s"
  done
done

# 3. OCSP GET keep-alive, one pre-signed answer
if command -v wrk >/dev/null; then
  for r in $(seq "$ROUNDS"); do
    for b in $(order "$r"); do
      conf=$W/$b/smartcert.conf
      serial=$(SMARTCERT_CONF=$conf "$SMARTCERT_BIN" ca show --user "e$(($$ % 1000))r1u0000000" --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["certificates"][0]["serial"])')
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      "$SMARTCERT_OCSPD_BIN" --config "$conf" --listen "127.0.0.1:$port" --foreground 2>"$W/ocspd-$b.log" &
      ocspd_pid=$!
      openssl ocsp -issuer "$W/$b/ca/issuing-ca.pem" -serial "0x$serial" -no_nonce -reqout "$W/req-$b.der" >/dev/null
      b64=$(python3 -c 'import base64,sys,urllib.parse; print(urllib.parse.quote(base64.b64encode(open(sys.argv[1],"rb").read()).decode(), safe=""))' "$W/req-$b.der")
      url="http://127.0.0.1:$port/ocsp/$b64"
      for _ in $(seq 200); do curl -sf -o /dev/null "$url" && break; sleep 0.05; done
      # until the answer is pre-signed and served from the store
      for _ in $(seq 200); do
        curl -sf -o /dev/null "$url"
        curl -sf "http://127.0.0.1:$port/metrics" | grep -q 'presigned_total{event="hit"} [1-9]' && break
        sleep 0.05
      done
      rate=$(wrk -t2 -c8 -d"${SECS}s" "$url" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
      kill "$ocspd_pid"; wait "$ocspd_pid" 2>/dev/null || true; ocspd_pid=
      ocsp[$b]="${ocsp[$b]:-} $rate"
      echo "ocsp round $r $b: $rate req/s"
    done
  done
fi

echo "== medians (rounds:$ROUNDS)"
el=$(median ${enrol[lmdb]}); ep=$(median ${enrol[postgresql]})
sl=$(median ${sign[lmdb]}); sp=$(median ${sign[postgresql]})
echo "bulk enrolment P-256: LMDB $el users/s, PostgreSQL $ep users/s (goal on PostgreSQL >= 1,000)"
echo "signatures through the module, $KEYS keys: LMDB $sl sig/s, PostgreSQL $sp sig/s = $(ratio "$sp" "$sl") (goal >= 0.7)"
if [ -n "${ocsp[lmdb]:-}" ]; then
  ol=$(median ${ocsp[lmdb]}); op=$(median ${ocsp[postgresql]})
  echo "OCSP GET keep-alive -c8: LMDB $ol req/s, PostgreSQL $op req/s = $(ratio "$op" "$ol") (goal >= 0.9)"
fi
