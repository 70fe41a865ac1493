#!/usr/bin/env python3
"""The audit chain verifies; after one record is altered in the LMDB file
(with lmdb-utils' mdb_dump/mdb_load), `audit verify` exits 8 and names it."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check, skip_unless  # noqa: E402

skip_unless("mdb_dump", "mdb_load")

with Deployment() as d:
    env = dict(d.env)
    for i in range(4):
        env["IDN"] = f"K{i:07d}"
        d.sc("ca", "enrol", "--user", f"user{i}", "--name", f"User {i}", "--id-number-source",
             "env:IDN", env=env)
    d.sc("ca", "suspend", "--user", "user1")
    v = d.sc_json("audit", "verify")
    check(v["ok"] and v["records"] == 7, f"chain verifies: {v}")
    recs = d.sc_json("audit", "show", "--user", "user1")
    check([r["kind"] for r in recs] == ["enrol", "hold", "suspend"], "audit show --user")
    check(all(r["outcome"] == "ok" for r in recs), "outcomes recorded")
    check(len(d.sc_json("audit", "show", "--kind", "enrol")) == 4, "audit show --kind")
    check(len(d.sc_json("audit", "show", "--since", "2000-01-01", "--until", "2000-01-02")) == 0,
          "audit show --since/--until")

    store = os.path.join(d.dir, "store")
    dump = subprocess.run(["mdb_dump", "-s", "audit", store], capture_output=True, text=True)
    check(dump.returncode == 0, "mdb_dump of the audit table")
    lines = dump.stdout.split("\n")
    body = [i for i, ln in enumerate(lines) if ln.startswith(" ")]
    # pairs of (key, value) lines after the header; alter the 3rd record's value
    key_i, val_i = body[4], body[5]
    key_hex = lines[key_i].strip()
    seq = int(key_hex, 16) if len(key_hex) <= 16 else None
    val = bytearray(bytes.fromhex(lines[val_i].strip()))
    pos = val.find(b"user1")
    check(pos > 0, "found the record to alter")
    val[pos + 4] = ord("9")              # user1 -> user9: a plausible forgery
    lines[val_i] = " " + val.hex()
    tampered = os.path.join(d.tmp, "audit.dump")
    open(tampered, "w").write("\n".join(lines))
    r = subprocess.run(["mdb_load", "-s", "audit", "-f", tampered, store], capture_output=True, text=True)
    check(r.returncode == 0, f"mdb_load the altered record: {r.stderr}")

    r = d.sc("audit", "verify", check=False)
    check(r.returncode == 8, f"audit verify exits 8 on a break ({r.returncode})")
    check("record 3" in r.stderr, f"names the first bad record: {r.stderr.strip()}")
    r = d.sc("audit", "verify", "--json", check=False)
    j = json.loads(r.stdout)
    check(r.returncode == 8 and not j["ok"] and j["first_bad"] == 3 and (seq in (None, 3)),
          f"--json names it too: {j}")
print("PASS")
