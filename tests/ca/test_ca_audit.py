#!/usr/bin/env python3
"""The audit chain verifies; after records are reordered, removed or
altered in the LMDB file (with lmdb-utils' mdb_dump/mdb_load), `audit
verify` exits 8 and names the first bad record."""
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
    check(v["ok"] and v["records"] == 8, f"chain verifies: {v}")
    recs = d.sc_json("audit", "show", "--user", "user1")
    check([r["kind"] for r in recs] == ["enrol", "hold", "suspend"], "audit show --user")
    check(all(r["outcome"] == "ok" for r in recs), "outcomes recorded")
    check(len(d.sc_json("audit", "show", "--kind", "enrol")) == 4, "audit show --kind")
    check(len(d.sc_json("audit", "show", "--since", "2000-01-01", "--until", "2000-01-02")) == 0,
          "audit show --since/--until")
    allrecs = d.sc_json("audit", "show")
    day = allrecs[0]["time"][:10]
    n_day = sum(1 for r_ in allrecs if r_["time"].startswith(day))
    check(len(d.sc_json("audit", "show", "--since", day, "--until", day)) == n_day,
          "a bare date in --until covers that whole day")
    check(len(d.sc_json("audit", "show", "--limit", "2")) == 2, "audit show --limit")

    store = os.path.join(d.dir, "store")
    original = subprocess.run(["mdb_dump", "-s", "audit", store], capture_output=True,
                              text=True, check=True).stdout
    saved = os.path.join(d.tmp, "audit.orig")
    open(saved, "w").write(original)

    def records(dump):
        lines = dump.split("\n")
        body = [i for i, ln in enumerate(lines) if ln.startswith(" ")]
        return lines, {int(lines[k].strip(), 16): v for k, v in zip(body[0::2], body[1::2])}

    def expect_break(what, seq):
        r = d.sc("audit", "verify", check=False)
        check(r.returncode == 8 and f"record {seq}" in r.stderr,
              f"{what}: exit 8 naming record {seq}: {r.stderr.strip()}")

    # reordered: records 2 and 4 swap places
    lines, at = records(original)
    lines[at[2]], lines[at[4]] = lines[at[4]], lines[at[2]]
    swapped = os.path.join(d.tmp, "audit.swapped")
    open(swapped, "w").write("\n".join(lines))
    subprocess.run(["mdb_load", "-s", "audit", "-f", swapped, store], check=True)
    expect_break("records 2 and 4 swapped", 2)
    subprocess.run(["mdb_load", "-s", "audit", "-f", saved, store], check=True)
    check(d.sc_json("audit", "verify")["ok"], "restored order verifies again")

    # removed: the store rebuilt from a full dump without record 4
    full = subprocess.run(["mdb_dump", "-a", store], capture_output=True, text=True,
                          check=True).stdout.split("\n")
    start = full.index("database=audit")
    key4 = " " + format(4, "016x")
    i = full.index(key4, start)
    del full[i:i + 2]
    rebuilt = os.path.join(d.tmp, "rebuilt")
    os.mkdir(rebuilt)
    dumpf = os.path.join(d.tmp, "full.dump")
    open(dumpf, "w").write("\n".join(full))
    subprocess.run(["mdb_load", "-f", dumpf, rebuilt], check=True)
    os.rename(os.path.join(store, "data.mdb"), os.path.join(d.tmp, "data.mdb.orig"))
    os.rename(os.path.join(rebuilt, "data.mdb"), os.path.join(store, "data.mdb"))
    check(d.sc_json("status")["store"]["audit"] == 7, "record 4 is gone from the rebuilt store")
    expect_break("record 4 removed", 4)
    r = d.sc("audit", "verify", "--json", check=False)
    check(json.loads(r.stdout)["first_bad"] == 4, "--json names the removed record")
    os.replace(os.path.join(d.tmp, "data.mdb.orig"), os.path.join(store, "data.mdb"))
    check(d.sc_json("audit", "verify")["ok"], "the original store verifies again")

    # altered: one field of record 3 rewritten
    dump = subprocess.run(["mdb_dump", "-s", "audit", store], capture_output=True, text=True)
    check(dump.returncode == 0, "mdb_dump of the audit table")
    lines = dump.stdout.split("\n")
    body = [i for i, ln in enumerate(lines) if ln.startswith(" ")]
    # pairs of (key, value) lines after the header; alter the 4th record's value
    # (1 init, 2 the first gateway, 3 and 4 the first enrolments)
    key_i, val_i = body[6], body[7]
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
    check("record 4" in r.stderr, f"names the first bad record: {r.stderr.strip()}")
    r = d.sc("audit", "verify", "--json", check=False)
    j = json.loads(r.stdout)
    check(r.returncode == 8 and not j["ok"] and j["first_bad"] == 4 and (seq in (None, 4)),
          f"--json names it too: {j}")
print("PASS")
