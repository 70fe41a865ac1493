#!/bin/bash
# Bulk enrolment rate (P-256 and RSA-2048), single-enrolment latency on a
# filled store, and `openssl ca` on an index of the same size for
# comparison.  A benchmark (meson benchmark / ninja benchmark), not a test.
#
#   bench-enrol.sh [ROWS] [FILL] [RSA_ROWS]
#     ROWS      P-256 rows in the bulk run (default 5000)
#     FILL      certificates put in the store before the latency run
#               (default 100000; 1000000 for the full figure)
#     RSA_ROWS  RSA-2048 rows (default 200: SoftHSMv2 generates RSA keys
#               about 100 times slower than P-256 keys)
# Environment: as bench-ca-lib.sh says.  Run heavy sizes under
# `flock /tmp/smartcert-bench.lock`.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/bench-ca-lib.sh"
ROWS=${1:-${SC_BENCH_ROWS:-5000}}
FILL=${2:-${SC_BENCH_FILL:-100000}}
RSA_ROWS=${3:-${SC_BENCH_RSA_ROWS:-200}}
FILLER=${SMARTCERT_BUILDDIR:?}/tests/ca/bench-fill
bench_workdir bench-ca
echo "# $(date -u +%FT%TZ) $(nproc) cores; ROWS=$ROWS RSA_ROWS=$RSA_ROWS FILL=$FILL work=$work"

"$SC" init --dir "$work/d" --json >/dev/null
export SMARTCERT_CONF=$work/d/smartcert.conf

for kt in p256 rsa2048; do
	n=$ROWS
	[ "$kt" = rsa2048 ] && n=$RSA_ROWS
	bench_rows "$work/$kt.csv" "$n" "$kt"
	echo "== bulk enrolment, $n rows, $kt =="
	"$SC" ca enrol --batch "$work/$kt.csv" --json
done

echo "== filling the store with $FILL certificates (bench-fill: pooled keys, NOSYNC) =="
"$FILLER" "$SMARTCERT_CONF" "$FILL"
"$SC" status --json

latency() {
	python3 - "$@" <<'PY'
import os, subprocess, sys, time
label, cmd = sys.argv[1], sys.argv[2:]
times = []
for i in range(20):
    env = dict(os.environ, IDN=f"L{i:08d}")
    args = [a.replace("{i}", str(i)) for a in cmd]
    t = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    times.append((time.perf_counter() - t) * 1000)
times.sort()
print(f'{{"what": "{label}", "runs": 20, "min_ms": {times[0]:.1f}, "median_ms": {times[10]:.1f}, '
      f'"p90_ms": {times[18]:.1f}, "max_ms": {times[-1]:.1f}}}')
PY
}

echo "== single enrol latency, process start to exit, P-256 =="
latency "smartcert ca enrol" "$SC" ca enrol --user "lat-{i}" --name Latency --id-number-source env:IDN

echo "== for comparison: openssl ca with $FILL lines in index.txt (P-256 CA, P-256 CSR) =="
o=$work/openssl-ca
mkdir -p "$o/new"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$o/ca.key" \
	-out "$o/ca.pem" -subj /CN=bench-ca -days 3650 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$o/u.key" \
	-out "$o/u.csr" -subj /CN=holder 2>/dev/null
python3 - "$o/index.txt" "$FILL" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(f"V\t310101000000Z\t\t{i + 0x1000:032X}\tunknown\t/CN=filled {i}\n")
PY
echo 7fffffff00000000 > "$o/serial"
cat > "$o/ca.cnf" <<CNF
[ca]
default_ca = bench
[bench]
dir = $o
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
certificate = \$dir/ca.pem
private_key = \$dir/ca.key
default_md = sha256
default_days = 365
policy = anything
unique_subject = no
[anything]
commonName = supplied
CNF
latency "openssl ca" openssl ca -batch -notext -config "$o/ca.cnf" -in "$o/u.csr" -out "$o/c{i}.pem"
