#!/bin/bash
# Bulk enrolment rate (P-256 and RSA-2048) and single-enrolment latency on a
# filled store.  A benchmark (meson benchmark / ninja benchmark), not a test.
#
#   bench-enrol.sh [ROWS] [FILL]
#     ROWS  rows per bulk run (default 5000)
#     FILL  certificates put in the store before the latency run
#           (default 100000; 1000000 for the full figure)
# Needs SMARTCERT_BIN and SMARTCERT_BUILDDIR (set by meson).
set -euo pipefail
ROWS=${1:-${SC_BENCH_ROWS:-5000}}
FILL=${2:-${SC_BENCH_FILL:-100000}}
SC=${SMARTCERT_BIN:?}
FILLER=${SMARTCERT_BUILDDIR:?}/tests/ca/bench-fill
unset SOFTHSM2_CONF
work=$(mktemp -d "${SMARTCERT_BUILDDIR}/bench-ca.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$SC" init --dir "$work/d" --json >/dev/null
export SMARTCERT_CONF=$work/d/smartcert.conf

for kt in p256 rsa2048; do
	python3 - "$work/$kt.csv" "$ROWS" "$kt" <<'PY'
import sys
path, n, kt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "w") as f:
    f.write("user_id,name,id_number,dob,profile,key_type\n")
    for i in range(n):
        f.write(f"{kt}-{i:07d},Bench Holder {i},{kt[0].upper()}{i:08d},,adult,{kt}\n")
PY
	echo "== bulk enrolment, $ROWS rows, $kt =="
	"$SC" ca enrol --batch "$work/$kt.csv" --json
done

echo "== filling the store with $FILL certificates (bench-fill: pooled keys, NOSYNC) =="
"$FILLER" "$SMARTCERT_CONF" "$FILL"
"$SC" status --json

echo "== single enrol latency (process start to exit, 20 runs) =="
python3 - "$SC" <<'PY'
import os, subprocess, sys, time
sc = sys.argv[1]
times = []
for i in range(20):
    env = dict(os.environ, IDN=f"L{i:08d}")
    t = time.perf_counter()
    subprocess.run([sc, "ca", "enrol", "--user", f"lat-{i}", "--name", "Latency",
                    "--id-number-source", "env:IDN"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    times.append((time.perf_counter() - t) * 1000)
times.sort()
print(f'{{"runs": 20, "median_ms": {times[10]:.1f}, "p90_ms": {times[18]:.1f}, "max_ms": {times[-1]:.1f}}}')
PY
