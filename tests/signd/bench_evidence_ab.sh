#!/bin/bash
# Two builds side by side: throughput of one (NEW) divided by another
# (BASE), measured in one run, the two builds alternating.  Used for what
# the keyed audit chain and the signed checkpoints cost (NEW with them, BASE
# the commit before them) and for the split of core/ into libraries (BASE
# ebd0410, the commit before the split; NEW 63e9815, the split merged):
#   bench_evidence_ab.sh BASE_BUILDDIR NEW_BUILDDIR
# or as the meson benchmark `evidence-ab` of the NEW build, with the base
# build named by SMARTCERT_AB_BASE (skipped without it).
#
#   (a) bulk enrolment: `smartcert ca enrol --batch` of AB_ENROL_ROWS P-256
#       users (default 4000) a round, into one deployment per build made by
#       that build's own `smartcert init` and warmed before the rounds by
#       AB_ENROL_WARM users (default 1000) with ca.key_groups =
#       AB_KEY_GROUPS (default 64): so every key group's HSM key exists
#       before the rounds, as it does in a deployment past its first few
#       thousand enrolments, and the rounds measure the steady state (a
#       build without key groups ignores the setting).  Making a group's
#       key is a one-time cost of a deployment, measured apart
#       (docs/evidence.md);
#   (b) authorised P-256 signatures/s through the PKCS#11 module and
#       smartcert-signd with AB_THREADS gateway threads (default 8): this
#       build's tests/pkcs11/bench-sign (SMARTCERT_START_SIGND=1) run with
#       each build's smartcert, module and smartcert-signd, on one
#       deployment per build holding AB_SIGN_KEYS P-256 users (default
#       5000, enrolled once before the rounds), AB_SIGN_SIGS signatures
#       per thread (default 500); the figure is bench-sign's
#       "module P-256 ... authorised sig/s" (keys drawn at random, each
#       signature with its own single-use token, durable replay and audit
#       records).  The script starts that build's smartcert-signd for
#       each run (bench-sign uses the one that answers) and stops it after.
#   (c) the store on its own, when both builds have tests/core/bench-store:
#       AB_STORE_N users (default 200000; 0 skips it) bulk-inserted, then
#       read transactions with a certificate lookup (bench-store's figures).
# Besides the rates, the CPU time (user + system) of `ca enrol` and of the
# service per run, in ms: the same work on both sides, so the difference
# is the added work, and it is far less disturbed by other load on the
# machine than the rates are.
#
# AB_ROUNDS rounds (default 3); in odd rounds BASE goes first, in even
# rounds NEW.  Each line carries the 1-minute load average before it.
# Prints the medians per build and the ratio NEW / BASE of the medians and
# the median of the rounds' ratios.  The base build of the commit before
# the keyed chain (2b28d19, "signd: the stop flag is atomic"):
#   git archive 2b28d19 | tar -x -C /tmp/eb-base && cd /tmp/eb-base &&
#   meson setup build --buildtype=release -Dtest_hooks=true && ninja -C build
# and this tree the same way, plus `ninja -C BUILD tests/pkcs11/bench-sign`.
# Run under `flock /tmp/smartcert-bench.lock` on a shared machine.
# Environment: AB_ROUNDS, AB_ENROL_ROWS, AB_ENROL_WARM, AB_KEY_GROUPS, AB_SIGN_KEYS, AB_SIGN_SIGS,
# AB_THREADS, AB_STORE_N, AB_BENCH_SIGN (default NEW/tests/pkcs11/bench-sign), AB_DIR
# (work directory, default /tmp/smartcert-evidence-ab; removed at the end
# unless AB_KEEP=1).
set -euo pipefail
BASE=${1:-${SMARTCERT_AB_BASE:-}}
CUR=${2:-${SMARTCERT_BUILDDIR:-}}
if [ -z "$BASE" ] || [ -z "$CUR" ]; then
	echo "SKIP: usage: bench_evidence_ab.sh BASE_BUILDDIR NEW_BUILDDIR (or SMARTCERT_AB_BASE)"
	exit 77
fi
BASE=$(cd "$BASE" && pwd) CUR=$(cd "$CUR" && pwd)
ROUNDS=${AB_ROUNDS:-3} ROWS=${AB_ENROL_ROWS:-4000} KEYS=${AB_SIGN_KEYS:-5000}
WARM=${AB_ENROL_WARM:-1000} KGROUPS=${AB_KEY_GROUPS:-64}
SIGS=${AB_SIGN_SIGS:-500} THREADS=${AB_THREADS:-8} STORE_N=${AB_STORE_N:-200000}
BENCH_SIGN=${AB_BENCH_SIGN:-$CUR/tests/pkcs11/bench-sign}
W=${AB_DIR:-/tmp/smartcert-evidence-ab}
for b in "$BASE" "$CUR"; do
	for f in tools/smartcert tools/smartcert-signd pkcs11/libsmartcert-pkcs11.so; do
		[ -x "$b/$f" ] || [ -f "$b/$f" ] || { echo "SKIP: $b/$f missing (build it first)"; exit 77; }
	done
done
[ -x "$BENCH_SIGN" ] || { echo "SKIP: $BENCH_SIGN missing (ninja -C $CUR tests/pkcs11/bench-sign)"; exit 77; }
unset SOFTHSM2_CONF SMARTCERT_CONF
rm -rf "$W"; mkdir -p "$W"

load() { cut -d' ' -f1 /proc/loadavg; }
now() { date +%s.%N; }
echo "# $(date -u +%FT%TZ) $(nproc) cores; base=$BASE new=$CUR"
echo "# rounds=$ROUNDS enrol rows=$ROWS sign keys=$KEYS threads=$THREADS sigs/thread=$SIGS"

# enrol-warm.csv, then enrol-R.csv for each round R: distinct users.
python3 - "$W" "$ROWS" "$WARM" "$ROUNDS" <<'PY'
import sys
w, n, warm, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for name, prefix, count in [("warm", "abw", warm)] + [(str(r), f"ab{r}", n) for r in range(1, rounds + 1)]:
    with open(f"{w}/enrol-{name}.csv", "w") as f:
        f.write("user_id,name,id_number,dob,profile,key_type\n")
        for i in range(count):
            f.write(f"{prefix}-{i:07d},Bench Holder {i},{prefix.upper()}{i:08d},1980-01-01,adult,p256\n")
PY

# bench-sign with one build's binaries; prints its output to $2.
sign_run() {  # BUILDDIR DEPLOYMENT OUTFILE
	env SMARTCERT_BIN="$1/tools/smartcert" SMARTCERT_PKCS11_MODULE="$1/pkcs11/libsmartcert-pkcs11.so" \
		SMARTCERT_SIGND_BIN="$1/tools/smartcert-signd" SMARTCERT_START_SIGND=1 \
		SMARTCERT_BUILDDIR="$W" SMARTCERT_BENCH_DIR="$2" SMARTCERT_BENCH_KEYS="$KEYS" \
		SMARTCERT_BENCH_RSA_KEYS=1 SMARTCERT_BENCH_THREADS="$THREADS" SMARTCERT_BENCH_SIGS="$SIGS" \
		"$BENCH_SIGN" >"$3" 2>&1 || { echo "bench-sign failed:"; tail -20 "$3"; return 1; }
}

TIMEFORMAT='%U %S'
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
SIGND_PID=
signd_start() {  # BUILDDIR DEPLOYMENT
	rm -f "$2/run/signd.sock"
	"$1/tools/smartcert-signd" --config "$2/smartcert.conf" 2>>"$2/signd-ab.log" &
	SIGND_PID=$!
	for _ in $(seq 400); do [ -S "$2/run/signd.sock" ] && break; sleep 0.025; done
	[ -S "$2/run/signd.sock" ] || { echo "smartcert-signd did not start (see $2/signd-ab.log)"; exit 1; }
	sleep 0.2
}
signd_stop() {
	[ -z "$SIGND_PID" ] || { kill "$SIGND_PID"; wait "$SIGND_PID" || true; }
	SIGND_PID=
}
trap 'signd_stop; [ "${AB_KEEP:-0}" = 1 ] || rm -rf "$W"' EXIT

# One signing deployment per build, enrolled (and warmed) by a first,
# unreported bench-sign run.
for side in base new; do
	b=$BASE; [ $side = new ] && b=$CUR
	"$b/tools/smartcert" init --dir "$W/sign-$side" --json >/dev/null
	t0=$(now)
	sign_run "$b" "$W/sign-$side" "$W/prep-$side.log"
	echo "# $side: signing deployment with $KEYS P-256 keys ready in" \
	     "$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.0f", b - a}') s;" \
	     "$(grep -m1 '^# enrolled' "$W/prep-$side.log" | sed 's/^# //')"
done

# One enrolment deployment per build, its key groups made by a first,
# unreported enrolment.
for side in base new; do
	b=$BASE; [ $side = new ] && b=$CUR
	"$b/tools/smartcert" init --dir "$W/enrol-$side" --json >/dev/null
	printf '\n[ca]\nkey_groups = %s\n' "$KGROUPS" >>"$W/enrol-$side/smartcert.conf"
	t0=$(now)
	SMARTCERT_CONF=$W/enrol-$side/smartcert.conf "$b/tools/smartcert" ca enrol --batch \
		"$W/enrol-warm.csv" --json >/dev/null
	echo "# $side: enrolment deployment warmed with $WARM users ($KGROUPS key groups) in" \
	     "$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.0f", b - a}') s"
done

: >"$W/results"
for r in $(seq "$ROUNDS"); do
	order="base new"; [ $((r % 2)) = 0 ] && order="new base"
	for side in $order; do
		b=$BASE; [ $side = new ] && b=$CUR
		# (a) bulk enrolment of this round's users
		d=$W/enrol-$side
		l=$(load); t0=$(now)
		{ time SMARTCERT_CONF=$d/smartcert.conf "$b/tools/smartcert" ca enrol --batch "$W/enrol-$r.csv" \
			--json >"$W/enrol-$side-$r.json"; } 2>"$W/enrol-$side-$r.cpu"
		t1=$(now)
		eps=$(awk -v n="$ROWS" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n / (b - a)}')
		cpu=$(awk '{printf "%.0f", ($1 + $2) * 1000}' "$W/enrol-$side-$r.cpu")
		echo "round $r $side: enrol $ROWS P-256 in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}') s" \
		     "= $eps users/s, $cpu ms CPU (load $l)"
		echo "$r $side enrol $eps $l" >>"$W/results"
		echo "$r $side enrol-cpu $cpu $l" >>"$W/results"
		# (b) authorised P-256 signatures/s through the module and the service
		l=$(load)
		signd_start "$b" "$W/sign-$side"
		c0=$(ticks "$SIGND_PID")
		sign_run "$b" "$W/sign-$side" "$W/sign-$side-$r.log"
		c1=$(ticks "$SIGND_PID")
		signd_stop
		sps=$(awk '/^module P-256: [0-9]+ authorised sig\/s/ {print $3; exit}' "$W/sign-$side-$r.log")
		[ -n "$sps" ] || { echo "no rate in bench-sign's output:"; tail -20 "$W/sign-$side-$r.log"; exit 1; }
		grep -q "already answers" "$W/sign-$side-$r.log" || { echo "bench-sign did not use our smartcert-signd"; exit 1; }
		cpu=$(( (c1 - c0) * 1000 / HZ ))
		echo "round $r $side: sign $sps P-256 sig/s, $THREADS threads; service CPU $cpu ms (load $l)"
		echo "$r $side sign $sps $l" >>"$W/results"
		echo "$r $side sign-cpu $cpu $l" >>"$W/results"
		# (c) the store on its own: that build's tests/core/bench-store
		if [ "$STORE_N" -gt 0 ] && [ -x "$b/tests/core/bench-store" ]; then
			l=$(load)
			mkdir -p "$W/store-$side-$r"
			SMARTCERT_BUILDDIR="$W/store-$side-$r" "$b/tests/core/bench-store" "$STORE_N" \
				>"$W/store-$side-$r.log" 2>&1 || { echo "bench-store failed:"; tail "$W/store-$side-$r.log"; exit 1; }
			rm -rf "$W/store-$side-$r"
			ins=$(awk '/^insert:/ {for (i = 1; i <= NF; i++) if ($i == "records/s") print $(i - 1)}' "$W/store-$side-$r.log")
			get=$(awk -F'[:(]' '/^read txn \+ cert_get/ {split($3, a, " "); print a[1]}' "$W/store-$side-$r.log")
			echo "round $r $side: store insert $ins records/s, read txn + cert_get $get /s (load $l)"
			echo "$r $side store-insert $ins $l" >>"$W/results"
			echo "$r $side store-get $get $l" >>"$W/results"
		fi
	done
done

python3 - "$W/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
val = {(int(r), s, k): float(v) for r, s, k, v, _ in rows}
load = {(int(r), s, k): l for r, s, k, _, l in rows}
rounds = sorted({k[0] for k in val})
names = {"enrol": "bulk enrolment, P-256 users/s", "sign": "authorised P-256 sig/s, module + signd",
         "enrol-cpu": "`ca enrol` CPU ms per run (lower is better)",
         "sign-cpu": "service CPU ms per bench-sign run (lower is better)",
         "store-insert": "store bulk insert, records/s (bench-store)",
         "store-get": "store read txn + certificate lookup /s (bench-store)"}
print()
print("| figure | " + " | ".join(f"round {r} base / new (load)" for r in rounds)
      + " | median base | median new | new ÷ base (medians) | median of the rounds' ratios |")
print("|---|" + "---|" * (len(rounds) + 4))
for k in [k for k in names if (rounds[0], "base", k) in val]:
    b = [val[(r, "base", k)] for r in rounds]
    n = [val[(r, "new", k)] for r in rounds]
    cells = [f"{val[(r, 'base', k)]:,.0f} ({load[(r, 'base', k)]}) / {val[(r, 'new', k)]:,.0f} ({load[(r, 'new', k)]})"
             for r in rounds]
    mb, mn = statistics.median(b), statistics.median(n)
    rr = statistics.median([x / y for x, y in zip(n, b)])
    print(f"| {names[k]} | " + " | ".join(cells) + f" | {mb:,.0f} | {mn:,.0f} | {mn / mb:.3f} | {rr:.3f} |")
PY
