#!/bin/bash
# CRL publishing benchmark (meson benchmark 'crl-bench', or run directly):
#   bench-crl.sh PATH/TO/bench-fill-revoked
# Environment: SMARTCERT_BIN (the CLI), CRL_BENCH_CERTS (default 4000000),
# CRL_BENCH_REVOKED (400000), CRL_BENCH_DELTA (1000), CRL_BENCH_DIR (work
# directory, default under the build dir; removed unless CRL_BENCH_KEEP=1),
# CRL_BENCH_OPENSSL (1: also time `openssl ca -gencrl` on a synthetic
# 1,000,000-line index with 100,000 revoked).
#
# The certificates are SYNTHETIC store records sharing one DER, written by
# bench-fill-revoked through the store API: CRL building reads only the
# revocation index, so this measures exactly what a real store would cost.
set -euo pipefail

FILL=${1:?usage: bench-crl.sh bench-fill-revoked}
SC=${SMARTCERT_BIN:-smartcert}
CERTS=${CRL_BENCH_CERTS:-4000000}
REVOKED=${CRL_BENCH_REVOKED:-400000}
DELTA=${CRL_BENCH_DELTA:-1000}
BASE=${CRL_BENCH_DIR:-${SMARTCERT_BUILDDIR:-$PWD}/test-tmp}
TIMEV=/usr/bin/time
[ -x "$TIMEV" ] || { echo "SKIP: /usr/bin/time missing (apt-get install time)"; exit 77; }
command -v openssl >/dev/null || { echo "SKIP: openssl missing"; exit 77; }

mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/crl-bench.XXXXXX")
cleanup() { [ "${CRL_BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
unset SOFTHSM2_CONF

# Sampler: runs GNU time -v CMD and samples the command's RssAnon (its own
# heap, without the store's memory-mapped file pages, which max RSS also
# counts) every 2 ms; prints the peak in KiB.
cat > "$WORK/anon.py" <<'PY'
import os, subprocess, sys, time
log = sys.argv[1]
with open(log + ".out", "w") as out, open(log + ".time", "w") as err:
    p = subprocess.Popen(sys.argv[2:], stdout=out, stderr=err)
    peak, child = 0, None
    while p.poll() is None:
        try:
            if child is None:
                kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
                child = kids[0] if kids else None
            if child:
                for ln in open(f"/proc/{child}/status"):
                    if ln.startswith("RssAnon:"):
                        peak = max(peak, int(ln.split()[1]))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
        time.sleep(0.002)
print(peak)
sys.exit(p.returncode)
PY

if [ -n "${CRL_BENCH_DEPLOY:-}" ]; then
	# Reuse a filled deployment (CRL_BENCH_KEEP=1 of an earlier run).
	export SMARTCERT_CONF="$CRL_BENCH_DEPLOY/smartcert.conf"
	SKIP_FILL=1
else
	"$SC" init --dir "$WORK/deploy" --json > "$WORK/init.json"
	export SMARTCERT_CONF="$WORK/deploy/smartcert.conf"
	SKIP_FILL=0
fi
DEPLOY=$(dirname "$SMARTCERT_CONF")

# Wall time, max RSS (KiB, GNU time -v) and peak RssAnon (KiB) of a command.
measure() {
	local log=$1; shift
	local anon wall rss
	anon=$(python3 "$WORK/anon.py" "$log" "$TIMEV" -v "$@")
	wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log.time")
	rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log.time")
	echo "$wall $rss $anon"
}
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

if [ "$SKIP_FILL" = 0 ]; then
	echo "== fill: $CERTS synthetic certificates, $REVOKED revoked"
	read -r wall rss anon < <(measure "$WORK/fill" "$FILL" --config "$SMARTCERT_CONF" --certs "$CERTS" --revoked "$REVOKED")
	echo "fill: wall $wall, max RSS ${rss} KiB"
fi
du -sh "$DEPLOY/store"

for run in 1 2 3; do
	read -r wall rss anon < <(measure "$WORK/full$run" "$SC" crl publish --json)
	bytes=$(json_field "$WORK/full$run.out" bytes)
	ms=$(json_field "$WORK/full$run.out" milliseconds)
	entries=$(json_field "$WORK/full$run.out" entries)
	ratio=$(python3 -c "print(f'{$rss*1024/$bytes:.2f}')")
	aratio=$(python3 -c "print(f'{$anon*1024/$bytes:.2f}')")
	echo "full publish #$run: wall $wall (inside publish ${ms} ms), max RSS ${rss} KiB" \
	     "(RSS/CRL-size $ratio), peak RssAnon ${anon} KiB (RssAnon/CRL-size $aratio)," \
	     "CRL bytes $bytes (full.crl entries $entries)"
done
ls -l "$DEPLOY/crl/full.crl" "$DEPLOY/crl/part-0.crl"

echo "== delta: $DELTA new revocations"
FROM=${CRL_BENCH_MORE_FROM:-0}
"$FILL" --config "$SMARTCERT_CONF" --certs "$CERTS" --more "$DELTA" --more-from "$FROM" > /dev/null
read -r wall rss anon < <(measure "$WORK/delta" "$SC" crl publish --delta --json)
echo "delta publish: wall $wall (inside publish $(json_field "$WORK/delta.out" milliseconds) ms)," \
     "max RSS ${rss} KiB, delta entries $(json_field "$WORK/delta.out" delta_entries)"
"$FILL" --config "$SMARTCERT_CONF" --certs "$CERTS" --more "$DELTA" --more-from $((FROM + DELTA)) > /dev/null
read -r wall rss anon < <(measure "$WORK/delta2" "$SC" crl publish --delta --json)
echo "delta publish (2nd, $((2 * DELTA)) since base): wall $wall (inside publish" \
     "$(json_field "$WORK/delta2.out" milliseconds) ms), max RSS ${rss} KiB"

# What --watch does per batch: the deltas plus the full CRL of every
# partition with a change since the last publish (Java and GnuTLS read no
# deltas).  One revocation touches one partition; $DELTA spread over the
# serial space touch them all.
for n in 1 "$DELTA"; do
	FROM=$((FROM + 2 * DELTA + 1))
	"$FILL" --config "$SMARTCERT_CONF" --certs "$CERTS" --more "$n" --more-from "$FROM" > /dev/null
	read -r wall rss anon < <(measure "$WORK/parts$n" "$SC" crl publish --changed-partitions --json)
	echo "batch of $n revocation(s), deltas + changed partitions' full CRLs: wall $wall" \
	     "(inside publish $(json_field "$WORK/parts$n.out" milliseconds) ms), max RSS ${rss} KiB," \
	     "$(json_field "$WORK/parts$n.out" partitions_full) partition CRLs," \
	     "$(json_field "$WORK/parts$n.out" bytes) bytes"
	FROM=$((FROM + n))
done

if [ "${CRL_BENCH_OPENSSL:-1}" = 1 ]; then
	echo "== openssl ca -gencrl: 1,000,000-line index, 100,000 revoked"
	O="$WORK/openssl"
	mkdir -p "$O"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$O/ca.key" \
		-out "$O/ca.pem" -subj "/CN=bench CA" -days 30 2> /dev/null
	python3 - "$O/index.txt" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(1, 1000001):
        serial = format(0x1000000000000000 + i, "X")
        if i % 10 == 0:
            f.write(f"R\t300101000000Z\t260101000000Z,keyCompromise\t{serial}\tunknown\t/CN=u{i}\n")
        else:
            f.write(f"V\t300101000000Z\t\t{serial}\tunknown\t/CN=u{i}\n")
PY
	cat > "$O/ca.cnf" <<CNF
[ ca ]
default_ca = bench
[ bench ]
dir = $O
database = $O/index.txt
certificate = $O/ca.pem
private_key = $O/ca.key
crlnumber = $O/crlnumber
default_md = sha256
default_crl_days = 1
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
CNF
	echo 01 > "$O/crlnumber"
	read -r wall rss anon < <(measure "$O/gencrl" openssl ca -config "$O/ca.cnf" -gencrl -out "$O/crl.pem")
	echo "openssl ca -gencrl: wall $wall, max RSS ${rss} KiB, CRL (PEM) $(stat -c %s "$O/crl.pem") bytes"
fi
