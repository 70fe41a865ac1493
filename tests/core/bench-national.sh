#!/usr/bin/env bash
# One run at national scale on the PostgreSQL store (a benchmark, not a
# test; BENCHMARKS.md): run under tests/lib/with-postgres.sh, which starts
# the server.
#
#   with-postgres.sh bench-national.sh BUILDDIR
#
# Each step is timed, in order, on one deployment:
#   1. NAT_USERS residents (default 4,000,000) enrolled into an LMDB store by
#      tests/ca/bench-fill (the real issuance path: a certificate signed by
#      the issuing CA key in the HSM, a binding MAC and a keyed ID hash per
#      resident), every tenth one revoked (keyCompromise) as it is added;
#   2. `smartcert store migrate --to` the PostgreSQL server, which copies
#      every entry and compares the two stores' digests, then VACUUM
#      (ANALYZE); the deployment then runs on PostgreSQL;
#   3. a full CRL publish, from PostgreSQL (/usr/bin/time -v);
#   4. authorised P-256 signatures through the module and the signing
#      service, over keys drawn at random among all the residents that are
#      not revoked (bench-sign, 8 threads), on LMDB before step 2 and on
#      PostgreSQL after it;
#   5. OCSP under load: NAT_OCSP_SERIALS certificates (90 % good, 10 %
#      revoked, spread over the whole store), each asked once (signed on
#      demand and stored), then wrk -c64 GET over all of them, every answer
#      of a sample checked by `openssl ocsp`;
#   6. NAT_REVOKES real revocations (`smartcert ca revoke`: the key-group
#      re-wrap and key destruction included), each timed.
# Environment: NAT_USERS, NAT_OCSP_SERIALS (20000), NAT_OCSP_SECONDS (20),
# NAT_SIGS (signatures per thread, 500), NAT_REVOKES (5), NAT_DIR (work
# directory, kept: about 25 GB for 4,000,000 residents).
set -euo pipefail
B=$(cd "${1:?usage: with-postgres.sh bench-national.sh BUILDDIR}" && pwd)
: "${SC_TEST_STORE:?run under tests/lib/with-postgres.sh}"
for t in wrk openssl curl /usr/bin/time python3; do
  command -v "$t" >/dev/null || { echo "SKIP: $t is not installed" >&2; exit 77; }
done
SC=$B/tools/smartcert
export SMARTCERT_BIN=$SC SMARTCERT_BUILDDIR=$B
N=${NAT_USERS:-4000000}
NSER=${NAT_OCSP_SERIALS:-20000}
SECS=${NAT_OCSP_SECONDS:-20}
SIGS=${NAT_SIGS:-500}
REVOKES=${NAT_REVOKES:-5}
W=${NAT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bench-national.XXXXXX")}
mkdir -p "$W"
D=$W/d
CONF=$D/smartcert.conf
export SMARTCERT_CONF=$CONF
unset SOFTHSM2_CONF
ocspd_pid=
trap '[ -n "$ocspd_pid" ] && kill "$ocspd_pid" 2>/dev/null; true' EXIT
now() { date +%s.%N; }
since() { python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))' "$1" "$(now)"; }
say() { echo "$*" | tee -a "$W/results.txt"; }

say "# $(date -u +%FT%TZ) $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, load $(cut -d' ' -f1-3 /proc/loadavg);" \
  "$N residents; work $W"

# 1. enrolment into LMDB
if [ ! -f "$W/filled" ]; then
  rm -rf "$D"
  "$SC" init --dir "$D" --json >/dev/null
  t=$(now)
  "$SC" ca key-groups --json >/dev/null
  say "key groups' HSM keys: $(since "$t") s"
  t=$(now)
  "$B/tests/ca/bench-fill" "$CONF" "$N" revoke-every=10 >"$W/fill.json"
  say "enrolment (bench-fill, LMDB): $(since "$t") s: $(cat "$W/fill.json")"
  # the deployment as filled, to start again from: the checkpoints vouch
  # for the newest audit record, and the token must still hold the group
  # keys that step 6's revocations destroy (the LMDB store is not written
  # after this: the run goes on in PostgreSQL)
  mkdir -p "$W/as-filled"
  cp -a "$CONF" "$D/checkpoints" "$D/hsm" "$W/as-filled/"
  touch "$W/filled"
fi
# each run has a server of its own: start again from the LMDB store
rm -rf "$D/checkpoints" "$D/hsm"
cp -a "$W/as-filled/smartcert.conf" "$W/as-filled/checkpoints" "$W/as-filled/hsm" "$D/"
say "LMDB store: $(du -sh "$D/store" | cut -f1)"

# authorised signatures/s through the module and the signing service
sign_rate() {
  SMARTCERT_BENCH_DIR=$D SMARTCERT_BENCH_FILLED=1 SMARTCERT_BENCH_REVOKED_EVERY=10 \
    SMARTCERT_BENCH_MODULE_ONLY=1 SMARTCERT_BENCH_KEYS=$N SMARTCERT_BENCH_RSA_KEYS=1 \
    SMARTCERT_BENCH_THREADS=8 SMARTCERT_BENCH_SIGS=$SIGS SMARTCERT_BENCH_WARM_RUNS=1 \
    SMARTCERT_START_SIGND=1 SMARTCERT_SIGND_BIN=$B/tools/smartcert-signd \
    SMARTCERT_PKCS11_MODULE=$B/pkcs11/libsmartcert-pkcs11.so "$B/tests/pkcs11/bench-sign" |
    sed -n 's/^module P-256: \([0-9]*\) authorised.*/\1 sig\/s/p'
}
# the same on LMDB first, for the ratio at this scale
rate=$(sign_rate)
say "signatures through the module on LMDB (8 threads x $SIGS, keys at random over $N residents): $rate"

# 2. into PostgreSQL
{
  printf '[store]\nbackend = postgresql\npg_schema = national\n' >"$W/store-pg.conf"
  t=$(now)
  /usr/bin/time -v "$SC" store migrate --to "$W/store-pg.conf" >"$W/migrate.json" 2>"$W/migrate.time"
  say "store migrate into PostgreSQL: $(since "$t") s, max RSS $(sed -n 's/.*Maximum resident set size (kbytes): //p' "$W/migrate.time") KiB: $(cat "$W/migrate.json")"
  python3 - "$CONF" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s = re.sub(r"\[store\]\n(?:[^\[\n][^\n]*\n|\n)*", "[store]\nbackend = postgresql\npg_schema = national\n\n", s, count=1)
open(p, "w").write(s)
PY
}
# what an operator does after a bulk load: the freshly copied tables
# vacuumed and analysed now, not by autovacuum in the middle of the run
t=$(now)
psql -qc 'VACUUM (ANALYZE)'
say "VACUUM (ANALYZE) after the load: $(since "$t") s"
say "PostgreSQL database: $(psql -Atc 'SELECT pg_size_pretty(pg_database_size(current_database()))')"
"$SC" store digest >"$W/digest-pg.json"
say "store digest on PostgreSQL: $(cat "$W/digest-pg.json")"

# 3. a full CRL publish
/usr/bin/time -v "$SC" crl publish --json >"$W/crl.json" 2>"$W/crl.time"
say "full CRL publish from PostgreSQL: wall $(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$W/crl.time"), max RSS $(sed -n 's/.*Maximum resident set size (kbytes): //p' "$W/crl.time") KiB"
crl=$(ls "$D"/crl/full.crl 2>/dev/null || ls "$D"/crl/*.crl | head -n 1)
say "  $crl: $(stat -c %s "$crl") bytes, $(openssl crl -inform DER -in "$crl" -noout -text | grep -c 'Serial Number:') entries"

# 4. signatures at random across all keys
rate=$(sign_rate)
say "signatures through the module on PostgreSQL (8 threads x $SIGS, keys at random over $N residents): $rate"

# 5. OCSP under load
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$SC" ca list --status good --limit $((NSER * 9 / 10)) --json >"$W/good.json"
"$SC" ca list --status revoked --limit $((NSER / 10)) --json >"$W/revoked.json"
python3 - "$D/ca/issuing-ca.pem" "$W/good.json" "$W/revoked.json" "$port" "$W" <<'PY'
import base64, hashlib, json, random, sys, urllib.parse
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

def tlv(tag, body):
    n = len(body)
    if n < 128:
        ln = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        ln = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + ln + body

ca = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
pub = ca.public_key()
if isinstance(pub, ec.EllipticCurvePublicKey):
    bits = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
else:
    bits = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
name_hash = hashlib.sha1(ca.subject.public_bytes()).digest()
key_hash = hashlib.sha1(bits).digest()
sha1 = tlv(0x30, tlv(0x06, bytes.fromhex("2b0e03021a")) + b"\x05\x00")
rows = [("good", c["serial"]) for c in json.load(open(sys.argv[2]))]
rows += [("revoked", c["serial"]) for c in json.load(open(sys.argv[3]))]
random.shuffle(rows)
port, w = sys.argv[4], sys.argv[5]
with open(w + "/ocsp-urls.txt", "w") as u, open(w + "/ocsp-expect.txt", "w") as e:
    for status, hexs in rows:
        serial = bytes.fromhex(hexs)
        if serial[0] & 0x80:
            serial = b"\x00" + serial
        certid = tlv(0x30, sha1 + tlv(0x04, name_hash) + tlv(0x04, key_hash) + tlv(0x02, serial))
        req = tlv(0x30, tlv(0x30, tlv(0x30, tlv(0x30, certid))))
        path = "/ocsp/" + urllib.parse.quote(base64.b64encode(req).decode(), safe="")
        u.write(path + "\n")
        e.write(f"{status} {hexs}\n")
PY
say "OCSP working set: $(wc -l <"$W/ocsp-urls.txt") certificates ($(grep -c '^revoked' "$W/ocsp-expect.txt") revoked)"
grep -q '^sign_ahead_per_second' "$CONF" || python3 - "$CONF" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
# nothing signed ahead in the background: the run measures answering
s = re.sub(r"\[ocsp\]\n", "[ocsp]\nsign_ahead_per_second = 0\n", s, count=1)
open(p, "w").write(s)
PY
"$B/tools/smartcert-ocspd" --config "$CONF" --listen "127.0.0.1:$port" --foreground 2>"$W/ocspd.log" &
ocspd_pid=$!
for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
t=$(now)
sed "s|^|http://127.0.0.1:$port|" "$W/ocsp-urls.txt" | xargs -P 8 -n 200 curl -sf >/dev/null
# until the writer thread has stored every answer signed on demand
for _ in $(seq 600); do
  stored=$(curl -sf "http://127.0.0.1:$port/metrics" | sed -n 's/^smartcert_ocsp_presigned_total{event="stored"} //p')
  [ "${stored:-0}" -ge "$(wc -l <"$W/ocsp-urls.txt")" ] && break
  sleep 0.5
done
say "first ask of each (signed on demand), until all are stored: $(since "$t") s"
# the answers a relying party gets, checked by openssl for a sample
paste -d' ' "$W/ocsp-expect.txt" "$W/ocsp-urls.txt" | shuf -n 200 --random-source=<(yes) |
  while read -r want hexs path; do
    curl -sf -o "$W/one.der" "http://127.0.0.1:$port$path"
    res=$(openssl ocsp -respin "$W/one.der" -issuer "$D/ca/issuing-ca.pem" -CAfile "$D/ca/chain.pem" \
      -serial "0x$hexs" 2>&1 || true)
    got=$(sed -n 's/^0x[0-9A-Fa-f]*: \(good\|revoked\)$/\1/p' <<<"$res")
    if [ "$got" != "$want" ] || ! grep -q 'Response verify OK' <<<"$res"; then
      echo "OCSP answer for $hexs: '$got' (want $want): $res" >&2
      exit 1
    fi
  done
say "openssl ocsp: 200 answers drawn at random verified, each with the expected status"
WRK_PATHS=$W/ocsp-urls.txt wrk -t2 -c64 -d"${SECS}s" -s "$(dirname "${BASH_SOURCE[0]}")/../lib/wrk-paths.lua" \
  "http://127.0.0.1:$port" >"$W/wrk.txt"
say "OCSP GET keep-alive, wrk -t2 -c64 ${SECS}s over the working set: $(sed -n 's/^Requests\/sec: *//p' "$W/wrk.txt") req/s; $(grep -E 'Latency|Non-2xx|Socket errors' "$W/wrk.txt" | tr -s ' ' | paste -sd';')"
say "  $(curl -sf "http://127.0.0.1:$port/metrics" | grep -E 'presigned_total\{event="(hit|miss|memory_hit|stored)"\}' | paste -sd' ')"
kill "$ocspd_pid"; wait "$ocspd_pid" 2>/dev/null || true; ocspd_pid=

# 6. real revocations, each with its key group's re-wrap
for i in $(seq "$REVOKES"); do
  u=$(printf 'fill%08d' $(( (RANDOM * 32768 + RANDOM) % N / 10 * 10 )))
  t=$(now)
  "$SC" ca revoke --user "$u" --reason keyCompromise --json >"$W/revoke-$i.json"
  say "ca revoke --user $u: $(since "$t") s ($(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("revoked", d))' "$W/revoke-$i.json" 2>/dev/null || true))"
done
say "done: $(date -u +%FT%TZ)"
