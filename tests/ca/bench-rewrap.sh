#!/bin/bash
# Cost of the key-group re-wrap a revocation does (docs/evidence.md,
# "Revocation destroys the key for real").  A benchmark (meson benchmark /
# ninja benchmark), never a timed test.
#
#   bench-rewrap.sh [GROUP] [RSA_GROUP] [REVOKES]
#     GROUP      P-256 keys in the one key group (default 1000: the group
#                size ca.key_groups = 4096 gives at 4 million keys)
#     RSA_GROUP  RSA-2048 keys in a second deployment's group (default 200;
#                SoftHSMv2 generates RSA keys about 100 times slower)
#     REVOKES    revocations timed per deployment (default 5)
# For each deployment (ca.key_groups = 1, so every key shares the group) it
# times `smartcert ca revoke` from process start to exit, which re-wraps the
# group's remaining keys in the HSM, commits, and destroys the old group
# key; and, as the baseline, the same revocation with ca.key_groups large
# enough that the revoked key is alone in its group (no re-wrap).  The HSM
# operations are counted from the audit record each re-wrap writes
# ("rewrapped=N") and the fixed calls per key and per group (see the docs).
# Environment: as bench-ca-lib.sh says.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/bench-ca-lib.sh"
GROUP=${1:-${SC_BENCH_GROUP:-1000}}
RSA_GROUP=${2:-${SC_BENCH_RSA_GROUP:-200}}
REVOKES=${3:-${SC_BENCH_REVOKES:-5}}
bench_workdir bench-rewrap
echo "# $(date -u +%FT%TZ) $(nproc) cores; GROUP=$GROUP RSA_GROUP=$RSA_GROUP REVOKES=$REVOKES"

run() { # NAME KEY_TYPE N KEY_GROUPS
	local name=$1 kt=$2 n=$3 groups=$4 d=$work/$1
	"$SC" init --dir "$d" --json >/dev/null
	printf '\n[ca]\nkey_groups = %s\n' "$groups" >>"$d/smartcert.conf"
	bench_rows "$d/rows.csv" "$n" "$kt"
	SMARTCERT_CONF=$d/smartcert.conf "$SC" ca enrol --batch "$d/rows.csv" --json >/dev/null
	SMARTCERT_CONF=$d/smartcert.conf python3 - "$SC" "$name" "$kt" "$n" "$groups" "$REVOKES" <<'PY'
import json, os, subprocess, sys, time
sc, name, kt, n, groups, revokes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
certs = json.loads(subprocess.run([sc, "ca", "list", "--json"], capture_output=True, text=True,
                                  check=True).stdout)
serials = [c["serial"] for c in certs if c.get("user")][:revokes]
times = []
for s in serials:
    t = time.perf_counter()
    subprocess.run([sc, "ca", "revoke", "--serial", s, "--reason", "keyCompromise"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times.append((time.perf_counter() - t) * 1000)
audit = subprocess.run([sc, "audit", "show", "--json"], capture_output=True, text=True, check=True).stdout
recs = []
for line in audit.splitlines():
    line = line.strip()
    if line.startswith("{"):
        try:
            recs.append(json.loads(line))
        except ValueError:
            pass
if not recs:
    doc = json.loads(audit)
    recs = doc if isinstance(doc, list) else doc.get("records", [])
rewrapped = [int(r["detail"].split("rewrapped=")[1]) for r in recs
             if r.get("kind") == "keygroup-rotate"]
times.sort()
per_key = None
if sum(rewrapped) > 0:   # a group whose revoked keys were its last re-wraps nothing
    per_key = (sum(times) / len(times)) / (sum(rewrapped) / len(rewrapped))
print(json.dumps({"what": name, "key_type": kt, "keys": n, "key_groups": groups,
                  "revocations": len(times), "median_ms": round(times[len(times) // 2], 1),
                  "min_ms": round(times[0], 1), "max_ms": round(times[-1], 1),
                  "rewrapped_per_revocation": rewrapped,
                  # per key: binding-MAC check, C_UnwrapKey, C_WrapKey x2
                  # (length, then wrap), C_DestroyObject, new binding MAC;
                  # per group: key-label lookups, C_GenerateKey, and
                  # C_DestroyObject of the old generation
                  "hsm_ops_per_revocation": [6 * k + 6 for k in rewrapped],
                  "ms_per_rewrapped_key": round(per_key, 3) if per_key else None}))
PY
}

echo "== P-256: one group of $GROUP keys =="
run p256-group p256 "$GROUP" 1
echo "== P-256: one group of $((GROUP / 10)) keys (the fixed cost is the difference) =="
run p256-small p256 $((GROUP / 10)) 1
echo "== RSA-2048: one group of $RSA_GROUP keys =="
run rsa-group rsa2048 "$RSA_GROUP" 1
