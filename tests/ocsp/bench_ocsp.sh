#!/bin/bash
# OCSP responder figures (docs/ocsp.md "Performance"): run as a meson
# benchmark (meson test --benchmark --suite ocsp) or directly:
#   tests/ocsp/bench_ocsp.sh BUILD/tests/ocsp/ocsp-bench-fill
# Environment: OCSP_BENCH_CERTS (store size, default 1000000),
# OCSP_BENCH_SECONDS (wrk duration, default 10), OCSP_BENCH_CONNS (64),
# OCSP_BENCH_LAT_CONNS (8: a second wrk comparison at low concurrency, where
# p99 is latency rather than queueing behind 64 connections),
# OCSP_BENCH_AB_N (ab requests, default 5000), OCSP_BENCH_ROUNDS (3),
# OCSP_BENCH_WRK_START_CPU (unset; N: wrk opens its connections held on
# CPU N and is let loose 50 ms later, as a client whose threads all start
# on one CPU),
# OCSP_BENCH_DIR (where the deployment and the store go; the 1,000,000
# certificate store took 310 MB here).
# Compared servers run in alternating rounds and medians are reported: the
# machine is shared and its load moves (the load average is printed, and
# for each wrk round the CPU taken by the server, by wrk and by all other
# processes).
#
# 1. wrk, GET keep-alive, one pre-signed response: smartcert-ocspd vs nginx
#    serving a static file of the same size with the same wrk settings, at
#    -c8 and -c64.
# 2. ab -c8 POST without keep-alive: smartcert-ocspd vs `openssl ocsp -index`.
# 3. time from `smartcert ca revoke` returning (commit) to the first revoked
#    answer.
# `openssl ocsp -port` binds every interface, so when run as root the whole
# bench runs in a private network namespace (loopback only).
set -euo pipefail

FILL=${1:?usage: bench_ocsp.sh PATH/TO/ocsp-bench-fill}
if [ "$(id -u)" = 0 ] && [ -z "${OCSP_BENCH_NETNS:-}" ] && command -v unshare >/dev/null \
   && command -v ip >/dev/null; then
	exec env OCSP_BENCH_NETNS=1 unshare -n bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi

for t in wrk ab nginx openssl curl /usr/bin/time; do
	command -v $t >/dev/null || { echo "SKIP: $t is not installed" >&2; exit 77; }
done
SMARTCERT=${SMARTCERT_BIN:?} OCSPD=${SMARTCERT_OCSPD_BIN:?}
PY=/usr/bin/python3
N=${OCSP_BENCH_CERTS:-1000000}
SECS=${OCSP_BENCH_SECONDS:-10}
CONNS=${OCSP_BENCH_CONNS:-64}
LAT_CONNS=${OCSP_BENCH_LAT_CONNS:-8}
AB_N=${OCSP_BENCH_AB_N:-5000}
ROUNDS=${OCSP_BENCH_ROUNDS:-3}
START_CPU=${OCSP_BENCH_WRK_START_CPU:-}
ALL_CPUS=$(taskset -p -c $$ | sed 's/.*: //')
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
to_ms() { case "$1" in *us) echo "${1%us}" | awk '{print $1/1000}';; *ms) echo "${1%ms}";;
	*s) echo "${1%s}" | awk '{print $1*1000}';; *) echo "$1";; esac; }
BASE=${OCSP_BENCH_DIR:-${SMARTCERT_BUILDDIR:-/tmp}/test-tmp}
mkdir -p "$BASE"
W=$(mktemp -d "$BASE/ocsp-bench-XXXXXX")
chmod 755 "$W"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ "${SMARTCERT_KEEP_TEST_DIRS:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT
unset SOFTHSM2_CONF

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {  # URL
	for _ in $(seq 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done
	echo "not ready: $1" >&2; return 1
}

echo "== deployment and store fill ($N certificates)"
"$SMARTCERT" init --dir "$W/d" --json >/dev/null
export SMARTCERT_CONF="$W/d/smartcert.conf"
# Measure the serving path alone: no background signing ahead of the
# million synthetic certificates during the runs.
printf '\n[ocsp]\nsign_ahead_per_second = 0\n' >>"$SMARTCERT_CONF"
t0=$(date +%s.%N)
"$FILL" "$SMARTCERT_CONF" "$N" "$W/serials.txt"
t1=$(date +%s.%N)
echo "filled in $(echo "$t1 - $t0" | bc 2>/dev/null || echo '?') s; store: $(du -sh "$W/d/store" | cut -f1)"
GOOD=$(awk '$1=="good"{print $2; exit}' "$W/serials.txt")
ISSUER="$W/d/ca/issuing-ca.pem"

PORT=$(free_port)
"$OCSPD" --config "$SMARTCERT_CONF" --foreground --listen "127.0.0.1:$PORT" 2>"$W/ocspd.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$PORT/healthz"

openssl ocsp -issuer "$ISSUER" -serial "0x$GOOD" -no_nonce -reqout "$W/req.der" >/dev/null
B64=$($PY -c 'import base64,sys,urllib.parse; print(urllib.parse.quote(base64.b64encode(open(sys.argv[1],"rb").read()).decode(), safe=""))' "$W/req.der")
URL="http://127.0.0.1:$PORT/ocsp/$B64"
curl -sf -o "$W/resp.der" "$URL"
# the first answer is stored behind the response: wait until it is served pre-signed
for _ in $(seq 100); do
	curl -sf -o /dev/null "$URL"
	curl -sf "http://127.0.0.1:$PORT/metrics" | grep -q 'presigned_total{event="hit"} [1-9]' && break
	sleep 0.05
done
curl -sf -o "$W/resp.der" "$URL"
SIZE=$(stat -c %s "$W/resp.der")
openssl ocsp -respin "$W/resp.der" -issuer "$ISSUER" -CAfile "$W/d/ca/chain.pem" \
	-serial "0x$GOOD" 2>&1 | grep -q ': good' || { echo "bench response is not good" >&2; exit 1; }

# CPU (% of one core) of the server, of wrk and of everything else during a
# round, from /proc: the machine is shared, and a round in which other
# processes took a core is not comparable with one in which they did not.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
proc_ticks() { local s=0 p; for p in "$@"; do s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $s; }
# CPU ticks of every thread, to name the biggest "other" consumers
thread_ticks() { $PY -c '
import glob
for f in glob.glob("/proc/[0-9]*/task/[0-9]*/stat"):
    try:
        st = open(f).read()
    except OSError:
        continue
    comm, rest = st[st.index("(") + 1:st.rindex(")")], st[st.rindex(")") + 2:].split()
    print(f, "(" + comm.replace(" ", "_") + ")", int(rest[11]) + int(rest[12]))'; }
top_others() {  # BEFORE AFTER SERVER_PIDS... -> "comm:ticks" of the 3 biggest
	$PY - "$@" <<'PYEOF'
import sys
def rd(p):
    d = {}
    for line in open(p):
        f, comm, t = line.rsplit(None, 2)
        d[f] = (comm, int(t))
    return d
a, b, pids = rd(sys.argv[1]), rd(sys.argv[2]), sys.argv[3:]
x = sorted((v[1] - a.get(k, ("", 0))[1], v[0]) for k, v in b.items()
           if not any(k.startswith(f"/proc/{p}/") for p in pids) and v[0] != "(wrk)")
print(" ".join(f"{c}:{t}" for t, c in x[-3:] if t > 0) or "-")
PYEOF
}
wrk_run() {  # NAME URL CONNS SERVER_PIDS...
	local name=$1 url=$2 conns=$3 rps p99 b0 b1 s0 s1 w hz other
	shift 3
	hz=$(getconf CLK_TCK)
	thread_ticks >"$W/ticks0"
	b0=$(busy_ticks); s0=$(proc_ticks "$@")
	if [ -n "$START_CPU" ]; then
		# wrk opens its connections while held on one CPU, then may run
		# anywhere: the case of a client whose threads all start on one CPU
		/usr/bin/time -f "%U %S" -o "$W/wrk-$name.time" taskset -c "$START_CPU" \
			wrk -t2 -c"$conns" -d"${SECS}s" --latency "$url" >"$W/wrk-$name.txt" &
		local tp=$! wp=""
		for _ in $(seq 100); do wp=$(pgrep -P "$tp" -x wrk || true); [ -n "$wp" ] && break; sleep 0.01; done
		sleep 0.05
		if [ -n "$wp" ]; then
			taskset -a -p -c "$ALL_CPUS" "$wp" >/dev/null
		else
			echo "warning: wrk not found to let loose; it ran on CPU $START_CPU alone" >&2
		fi
		wait "$tp"
	else
		/usr/bin/time -f "%U %S" -o "$W/wrk-$name.time" \
			wrk -t2 -c"$conns" -d"${SECS}s" --latency "$url" >"$W/wrk-$name.txt"
	fi
	b1=$(busy_ticks); s1=$(proc_ticks "$@")
	w=$(awk -v hz="$hz" '{print int(($1 + $2) * hz)}' "$W/wrk-$name.time")
	rps=$(awk '/^Requests\/sec/{print $2}' "$W/wrk-$name.txt")
	p99=$(awk '$1=="99%"{print $2}' "$W/wrk-$name.txt")
	other=$(( ((b1 - b0) - (s1 - s0) - w) * 100 / hz / SECS ))
	echo "$name $rps $p99 cpu: server $(( (s1 - s0) * 100 / hz / SECS ))%" \
		"wrk $(( w * 100 / hz / SECS ))% other $other%$( [ "$other" -ge 5 ] && \
		{ thread_ticks >"$W/ticks1"; echo " [top: $(top_others "$W/ticks0" "$W/ticks1" "$@")]"; })"
}

NPORT=$(free_port)
mkdir -p "$W/nginx/www" "$W/nginx/tmp"
cp "$W/resp.der" "$W/nginx/www/resp.der"
chmod -R a+rX "$W/nginx"
cat >"$W/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log;
daemon off;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $W/nginx/tmp; proxy_temp_path $W/nginx/tmp;
  fastcgi_temp_path $W/nginx/tmp; uwsgi_temp_path $W/nginx/tmp; scgi_temp_path $W/nginx/tmp;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NPORT;
    root $W/nginx/www;
    default_type application/ocsp-response;
  }
}
NGINX
nginx -c "$W/nginx/nginx.conf" -p "$W/nginx" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
wait_http "http://127.0.0.1:$NPORT/resp.der"
OCSPD_PID=${PIDS[0]}

# connections the daemon moved to another worker (docs/ocsp.md, HTTP)
moved() { curl -sf "http://127.0.0.1:$PORT/metrics" |
	awk '$1=="smartcert_ocsp_connections_moved_total"{print $2; f=1} END{if(!f)print 0}'; }
wrk_compare() {  # CONNS -> OC_RPS OC_P99 NG_RPS NG_P99 RATIO
	local i a b c e m0 oc_cpu ng_cpu OC_R="" OC_P="" NG_R="" NG_P=""
	echo "== wrk GET keep-alive, pre-signed response of $SIZE bytes (-t2 -c$1 -d${SECS}s, $ROUNDS rounds$( \
		[ -n "$START_CPU" ] && echo ", wrk connecting from CPU $START_CPU"))"
	for i in $(seq "$ROUNDS"); do
		m0=$(moved)
		read -r _ a b oc_cpu < <(wrk_run ocspd "$URL" "$1" "$OCSPD_PID")
		oc_cpu="$oc_cpu, moved $(( $(moved) - m0 ))"
		# nginx: master and workers
		read -r _ c e ng_cpu < <(wrk_run nginx "http://127.0.0.1:$NPORT/resp.der" "$1" \
			"$NGINX_PID" $(pgrep -P "$NGINX_PID"))
		echo "round $i: smartcert-ocspd $a req/s p99 $b ($oc_cpu)" \
			"| nginx $c req/s p99 $e ($ng_cpu) | load $(cut -d' ' -f1 /proc/loadavg)"
		OC_R="$OC_R $a"; OC_P="$OC_P $(to_ms "$b")"; NG_R="$NG_R $c"; NG_P="$NG_P $(to_ms "$e")"
	done
	OC_RPS=$(echo "$OC_R" | median); OC_P99="$(echo "$OC_P" | median)ms"
	NG_RPS=$(echo "$NG_R" | median); NG_P99="$(echo "$NG_P" | median)ms"
	RATIO=$($PY -c "print(f'{$OC_RPS/$NG_RPS:.2f}')")
	echo "median: smartcert-ocspd $OC_RPS req/s p99 $OC_P99, nginx $NG_RPS req/s p99 $NG_P99, ratio $RATIO"
}
wrk_compare "$LAT_CONNS"
LAT="$OC_RPS req/s, p99 $OC_P99 | nginx $NG_RPS req/s, p99 $NG_P99 | ratio $RATIO"
wrk_compare "$CONNS"

# openssl ocsp -index over the same certificates, software P-256 signer
$PY - "$W/serials.txt" "$W/index.txt" <<'PYEOF'
import sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        st, hexs = line.split()
        if st == "good":
            out.write(f"V\t351231235959Z\t\t{hexs.upper()}\tunknown\t/CN=bench-{hexs}\n")
        else:
            out.write(f"R\t351231235959Z\t250101000000Z,keyCompromise\t{hexs.upper()}\tunknown\t/CN=bench-{hexs}\n")
PYEOF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench-ocsp \
	-keyout "$W/rkey.pem" -out "$W/rcert.pem" -days 2 2>/dev/null
OPORT=$(free_port)
# `openssl ocsp -port` binds [::] (IPv6 only here), hence [::1]
openssl ocsp -index "$W/index.txt" -port "$OPORT" -rsigner "$W/rcert.pem" -rkey "$W/rkey.pem" \
	-CA "$ISSUER" -nmin 60 >"$W/openssl-ocsp.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do
	openssl ocsp -url "http://[::1]:$OPORT" -reqin "$W/req.der" -noverify >/dev/null 2>&1 && break
	sleep 0.05
done

ab_run() {  # NAME URL -> req/s (ab's "failed (length)" only means responses of
	# varying size; -r: a reset connection is counted, not fatal)
	{ ab -r -s 10 -q -c8 -n "$AB_N" -p "$W/req.der" -T application/ocsp-request "$2" 2>&1 || true; } \
		>"$W/ab-$1.txt"
	awk '/^Requests per second/{print $4}' "$W/ab-$1.txt"
}
echo "== ab -c8 -n $AB_N POST, no keep-alive, same certificate, nonce-less request ($ROUNDS rounds)"
AO_R="" AS_R=""
for i in $(seq "$ROUNDS"); do
	a=$(ab_run ocspd "http://127.0.0.1:$PORT/ocsp")
	b=$(ab_run openssl "http://[::1]:$OPORT/")
	grep -hE "^(Complete|Failed) requests|Exceptions|Non-2xx|Length:|Receive:|^apr_|^Total of" \
		"$W/ab-ocspd.txt" "$W/ab-openssl.txt" | tr -s ' ' | paste -sd' ' | sed 's/^/  ab: /' || true
	echo "round $i: smartcert-ocspd $a req/s | openssl ocsp $b req/s | load $(cut -d' ' -f1 /proc/loadavg)"
	AO_R="$AO_R $a"; AS_R="$AS_R $b"
done
AB_OC=$(echo "$AO_R" | median); AB_OS=$(echo "$AS_R" | median)
AB_RATIO=$($PY -c "print(f'{$AB_OC/$AB_OS:.2f}')")
echo "median: smartcert-ocspd $AB_OC req/s, openssl ocsp $AB_OS req/s, ratio $AB_RATIO" \
	"(rounds completed: $(echo "$AO_R" | wc -w) and $(echo "$AS_R" | wc -w))"

echo "== revoke commit -> first revoked answer"
REV_MS=$(SMARTCERT_TESTLIB="$SMARTCERT_SRCDIR/tests/lib" $PY - "$PORT" "$ISSUER" "$SMARTCERT" <<'EOF'
import json, os, subprocess, sys, time, urllib.request
port, issuer, sc = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(os.environ["SMARTCERT_SRCDIR"], "tests", "ocsp"))
from ocsptest import make_request, load_pem
from cryptography.x509 import ocsp
iss = load_pem(issuer)
def ask(serial):
    rq = urllib.request.Request(f"http://127.0.0.1:{port}/ocsp", data=make_request(iss, [serial]),
                                headers={"Content-Type": "application/ocsp-request"})
    with urllib.request.urlopen(rq, timeout=10) as u:
        return ocsp.load_der_ocsp_response(u.read()).certificate_status
out = []
for i in range(5):
    env = dict(os.environ, SC_BENCH_ID=f"Z{i:06d}(1)")
    r = subprocess.run([sc, "ca", "enrol", "--user", f"bench{i}", "--name", f"Bench {i}",
                        "--id-number-source", "env:SC_BENCH_ID", "--json"],
                       env=env, capture_output=True, text=True, check=True)
    hexs = json.loads(r.stdout)["serial"]
    serial = int(hexs, 16)
    assert ask(serial) == ocsp.OCSPCertStatus.GOOD and ask(serial) == ocsp.OCSPCertStatus.GOOD
    subprocess.run([sc, "ca", "revoke", "--serial", hexs, "--reason", "keyCompromise"],
                   check=True, capture_output=True)
    t0 = time.monotonic()
    tries = 0
    while True:
        tries += 1
        if ask(serial) == ocsp.OCSPCertStatus.REVOKED:
            break
    out.append((time.monotonic() - t0) * 1000)
    assert tries == 1, "a good answer was served after the revocation committed"
print(" ".join(f"{x:.1f}" for x in out))
EOF
)
echo "ms from revoke commit to first revoked answer (5 runs): $REV_MS"

echo
echo "== summary (store: $N certificates, $(nproc) cores)"
printf '%-44s %s\n' "wrk -c$CONNS GET keep-alive, smartcert-ocspd" "$OC_RPS req/s, p99 $OC_P99"
printf '%-44s %s\n' "wrk -c$CONNS GET keep-alive, nginx same size" "$NG_RPS req/s, p99 $NG_P99"
printf '%-44s %s\n' "ratio ocspd/nginx (goal >= 0.7)" "$RATIO"
printf '%-44s %s\n' "wrk -c$LAT_CONNS, smartcert-ocspd" "$LAT"
printf '%-44s %s\n' "ab -c8 POST no keep-alive, smartcert-ocspd" "$AB_OC req/s"
printf '%-44s %s\n' "ab -c8 POST no keep-alive, openssl ocsp" "${AB_OS:-?} req/s"
printf '%-44s %s\n' "ratio ocspd/openssl (goal >= 1.2)" "$AB_RATIO"
printf '%-44s %s\n' "revoke commit -> revoked answer (ms)" "$REV_MS"
