#!/usr/bin/env bash
# The main job end to end on the embedded default (SoftHSMv2 + LMDB in a
# local directory): installs what is needed, builds, then creates a
# deployment, enrols residents, signs digests through the PKCS#11 module
# with authorisation tokens, renews, suspends and resumes, revokes,
# publishes CRLs, answers OCSP, and verifies the audit chain.
#
#   scripts/demo.sh [DIR]      (default ./demo-deployment, recreated)
#
# SMARTCERT_BACKEND=nss runs the same on the second backend, an NSS
# softoken database in FIPS mode (docs/backends.md).  SMARTCERT_STORE=postgresql
# keeps the store in PostgreSQL instead of LMDB, in the database libpq's
# environment names (PGHOST, PGDATABASE, ...; tests/lib/with-postgres.sh
# starts a server of its own and sets them).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
# SMARTCERT_DEMO_BUILD=DIR: run on that build as it is (the test suite's
# demo-* tests); otherwise install, build build-demo, and run on it.
if [ -n "${SMARTCERT_DEMO_BUILD:-}" ]; then
  build=$SMARTCERT_DEMO_BUILD
else
  scripts/install-deps.sh
  build=build-demo
  if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dbuildtype=release >/dev/null
  fi
  ninja -C "$build" >/dev/null
fi
case $build in /*) ;; *) build=$top/$build ;; esac

dir=${1:-$top/demo-deployment}
rm -rf "$dir"
sc="$build/tools/smartcert"
ocspd="$build/tools/smartcert-ocspd"
signd="$build/tools/smartcert-signd"
export SMARTCERT_PKCS11_MODULE="$build/pkcs11/libsmartcert-pkcs11.so"
unset SOFTHSM2_CONF
work=$(mktemp -d)
ocspd_pid=
signd_pid=
cleanup() {
  [ -n "$ocspd_pid" ] && kill "$ocspd_pid" 2>/dev/null || true
  [ -n "$signd_pid" ] && kill "$signd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "1. Create the deployment (own SoftHSMv2 token, master key, root + issuing CA, OCSP signer, LMDB store)"
show "$sc" init --dir "$dir" ${SMARTCERT_BACKEND:+--backend "$SMARTCERT_BACKEND"} \
  ${SMARTCERT_STORE:+--store "$SMARTCERT_STORE"}
export SMARTCERT_CONF="$dir/smartcert.conf"
show "$sc" status

step "2. Enrol residents (central key generation in the HSM; ID-card numbers never stored)"
printf 'A1234563' > "$work/alice.id"; chmod 600 "$work/alice.id"
printf 'B7654321' > "$work/bob.id"; chmod 600 "$work/bob.id"
printf 'C2468024' > "$work/carol.id"; chmod 600 "$work/carol.id"
show "$sc" ca enrol --user alice --name "CHAN Tai Man" --id-number-source "file:$work/alice.id"
show "$sc" ca enrol --user bob --name "WONG Siu Ming" --id-number-source "file:$work/bob.id" --key-type rsa2048
show "$sc" ca enrol --user carol --name "LEE Ka Yan" --id-number-source "file:$work/carol.id" \
  --profile minor --dob 2012-05-01
cat > "$work/batch.csv" <<CSV
user_id,name,id_number,dob,profile,key_type
dave,HO Wai Kit,D1357913,,adult,p256
erin,CHEUNG Mei Ling,E9753102,1990-02-14,adult,p256
CSV
show "$sc" ca enrol --batch "$work/batch.csv"
show "$sc" ca list

step "3. Start the signing service; gateways reach it through the PKCS#11 module"
# The service alone reads the backend PIN, opens the HSM and the store.  A
# gateway needs only the service's socket (gateway.conf) and its credential.
printf '$ %s\n' "smartcert-signd --config $SMARTCERT_CONF &"
"$signd" --config "$SMARTCERT_CONF" 2>"$work/signd.log" &
signd_pid=$!
for _ in $(seq 100); do [ -S "$dir/run/signd.sock" ] && break; sleep 0.05; done
[ -S "$dir/run/signd.sock" ] || { cat "$work/signd.log" >&2; exit 1; }
show "$sc" gateway list
show cat "$dir/gateway.conf"

step "3b. Sign a document through the PKCS#11 module, authorised by a single-use token"
echo "Tenancy agreement, flat 12B, signed $(date -u +%F)" > "$work/contract.txt"
show "$sc" sign --user alice --in "$work/contract.txt" --authorize --out "$work/contract.p7s"
show openssl cms -verify -binary -inform DER -in "$work/contract.p7s" \
  -content "$work/contract.txt" -CAfile "$dir/ca/chain.pem" -purpose any -out /dev/null
show "$sc" sign --user bob --in "$work/contract.txt" --authorize --out "$work/contract-bob.p7s"

step "4. The gateway flow: the resident approves one digest, the token is single-use"
# What a gateway does: compute the digest to be approved (the CMS signed
# attributes, with a fixed signing time), have the authorisation service
# issue a token for exactly that digest, then sign with the token.
when=$(date +%s)
"$sc" sign --user alice --in "$work/contract.txt" --signing-time "$when" --print-digest --json \
  2>/dev/null > "$work/approve.json"
cat "$work/approve.json"; echo
digest=$(json_field "$work/approve.json" digest)
key=$(json_field "$work/approve.json" key_id)
token=$("$sc" authz issue --user alice --key "$key" --digest "$digest")
show "$sc" authz show "$token"
show "$sc" sign --user alice --in "$work/contract.txt" --signing-time "$when" --token "$token" \
  --out "$work/once.p7s"
printf '$ %s\n' "smartcert sign ... --token <the same token>   (replay)"
if "$sc" sign --user alice --in "$work/contract.txt" --signing-time "$when" --token "$token" \
  --out "$work/twice.p7s"; then
  echo "ERROR: a replayed token was accepted" >&2; exit 1
fi
echo "(refused, as it must be)"

step "5. Renew with the holder's consent; suspend and resume"
"$sc" ca show --user dave --json > "$work/dave.json"
dave_key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["keys"][-1]["key_id"])' "$work/dave.json")
dave_serial=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["certificates"][-1]["serial"])' "$work/dave.json")
consent=$("$sc" authz issue --user dave --key "$dave_key" --purpose renew --serial "$dave_serial")
show "$sc" ca renew --user dave --consent "$consent"
show "$sc" ca suspend --user erin
if "$sc" sign --user erin --in "$work/contract.txt" --authorize --out "$work/erin.p7s"; then
  echo "ERROR: a suspended account signed" >&2; exit 1
fi
echo "(signing refused while suspended)"
show "$sc" ca resume --user erin
show "$sc" sign --user erin --in "$work/contract.txt" --authorize --out "$work/erin.p7s"

step "6. Revoke (key compromise): the wrapped key is destroyed"
show "$sc" ca revoke --user bob --reason keyCompromise
if "$sc" sign --user bob --in "$work/contract.txt" --authorize --out "$work/bob2.p7s"; then
  echo "ERROR: a revoked key signed" >&2; exit 1
fi
echo "(signing refused after revocation)"

step "7. Publish CRLs (full, delta, partitioned), signed in the HSM"
show "$sc" crl publish
show "$sc" crl show "$dir/crl/full.crl"
"$sc" ca show --user bob --json > "$work/bob.json"
bob_serial=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["certificates"][-1]["serial"])' "$work/bob.json")
"$sc" ca export --serial "$bob_serial" --out "$work/bob.pem"
printf '$ %s\n' "openssl verify -crl_check -CRLfile full.crl bob.pem   (revoked: must fail)"
if openssl verify -crl_check -CAfile "$dir/ca/chain.pem" -CRLfile "$dir/crl/full.crl" "$work/bob.pem"; then
  echo "ERROR: revoked certificate validated" >&2; exit 1
fi
"$sc" ca show --user alice --json > "$work/alice.json"
alice_serial=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["certificates"][-1]["serial"])' "$work/alice.json")
"$sc" ca export --serial "$alice_serial" --out "$work/alice.pem"
show openssl verify -crl_check -CAfile "$dir/ca/chain.pem" -CRLfile "$dir/crl/full.crl" "$work/alice.pem"

step "8. Answer OCSP for relying parties"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ocspd" --config "$SMARTCERT_CONF" --listen "127.0.0.1:$port" --foreground 2>"$work/ocspd.log" &
ocspd_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
show openssl ocsp -url "http://127.0.0.1:$port/ocsp" -issuer "$dir/ca/issuing-ca.pem" \
  -cert "$work/alice.pem" -cert "$work/bob.pem" -CAfile "$dir/ca/chain.pem"

step "9. Evidence: the audit chain (keyed in the HSM) and the signed checkpoints outside the store"
show "$sc" audit verify
show "$sc" audit show --user bob
show sh "$top/scripts/verify-checkpoints.sh" "$dir/checkpoints/checkpoints.log" \
  "$dir/checkpoints/checkpoint-signer.pem"
# A store rolled back to an earlier copy is refused by every process.
if [ "${SMARTCERT_STORE:-}" = postgresql ]; then
  # PostgreSQL's own backup tools: an earlier dump restored over the schema
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  "$pgbin/pg_dump" -n smartcert -Fc -f "$work/backup.dump"
else
  "$sc" store backup "$work/backup" >/dev/null
fi
"$sc" ca suspend --user dave >/dev/null
kill "$signd_pid" 2>/dev/null; wait "$signd_pid" 2>/dev/null || true; signd_pid=
kill "$ocspd_pid" 2>/dev/null; wait "$ocspd_pid" 2>/dev/null || true; ocspd_pid=
if [ "${SMARTCERT_STORE:-}" = postgresql ]; then
  "$pgbin/pg_dump" -n smartcert -Fc -f "$work/current.dump"
  "$pgbin/psql" -q -c 'SET client_min_messages = warning' -c 'DROP SCHEMA smartcert CASCADE' && "$pgbin/pg_restore" -d "$PGDATABASE" "$work/backup.dump"
  printf '$ %s\n' "smartcert status   (an earlier pg_dump restored over the store: refused)"
  if "$sc" status; then echo "ERROR: a rolled-back store was served" >&2; exit 1; fi
  "$pgbin/psql" -q -c 'SET client_min_messages = warning' -c 'DROP SCHEMA smartcert CASCADE' && "$pgbin/pg_restore" -d "$PGDATABASE" "$work/current.dump"
else
  mv "$dir/store" "$work/store.current" && cp -a "$work/backup/store" "$dir/store"
  printf '$ %s\n' "smartcert status   (the store copied back by hand: refused)"
  if "$sc" status; then echo "ERROR: a rolled-back store was served" >&2; exit 1; fi
  rm -rf "$dir/store" && mv "$work/store.current" "$dir/store"
fi
show "$sc" store check

printf '\nDemo complete. The deployment is in %s\n' "$dir"
