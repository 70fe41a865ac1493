#!/usr/bin/env python3
"""The audit chain verifies; after records are reordered, removed or
altered in the LMDB file (with lmdb-utils' mdb_dump/mdb_load), `audit
verify` exits 8 and names the first bad record."""
import json
import os
import shutil
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from lmdbedit import dump, load, pairs, rebuild  # noqa: E402
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
    original = dump(store, "audit")

    def expect_break(what, seq):
        r = d.sc("audit", "verify", check=False)
        check(r.returncode == 8 and f"record {seq}" in r.stderr,
              f"{what}: exit 8 naming record {seq}: {r.stderr.strip()}")

    # reordered: records 2 and 4 swap places
    lines = list(original)
    at = {int.from_bytes(k, "big"): i + 1 for k, (i, _) in pairs(lines).items()}
    lines[at[2]], lines[at[4]] = lines[at[4]], lines[at[2]]
    load(store, lines, "audit")
    expect_break("records 2 and 4 swapped", 2)
    load(store, original, "audit")
    check(d.sc_json("audit", "verify")["ok"], "restored order verifies again")

    # removed: the store rebuilt from a full dump without record 4
    full = dump(store)
    i, _ = pairs(full, "audit")[(4).to_bytes(8, "big")]
    del full[i:i + 2]
    shutil.copyfile(os.path.join(store, "data.mdb"), os.path.join(d.tmp, "data.mdb.orig"))
    rebuild(d.tmp, store, full)
    check(d.sc_json("status")["store"]["audit"] == 7, "record 4 is gone from the rebuilt store")
    expect_break("record 4 removed", 4)
    r = d.sc("audit", "verify", "--json", check=False)
    check(json.loads(r.stdout)["first_bad"] == 4, "--json names the removed record")
    os.replace(os.path.join(d.tmp, "data.mdb.orig"), os.path.join(store, "data.mdb"))
    check(d.sc_json("audit", "verify")["ok"], "the original store verifies again")

    # altered: record 4's value (1 init, 2 the first gateway, 3 and 4 the
    # first enrolments) rewritten, user1 -> user9: a plausible forgery
    lines = dump(store, "audit")
    i, val = pairs(lines)[(4).to_bytes(8, "big")]
    val = bytearray(val)
    pos = val.find(b"user1")
    check(pos > 0, "found the record to alter")
    val[pos + 4] = ord("9")
    lines[i + 1] = " " + val.hex()
    load(store, lines, "audit")

    r = d.sc("audit", "verify", check=False)
    check(r.returncode == 8, f"audit verify exits 8 on a break ({r.returncode})")
    check("record 4" in r.stderr, f"names the first bad record: {r.stderr.strip()}")
    r = d.sc("audit", "verify", "--json", check=False)
    j = json.loads(r.stdout)
    check(r.returncode == 8 and not j["ok"] and j["first_bad"] == 4,
          f"--json names it too: {j}")
print("PASS")
