#!/usr/bin/env python3
"""Batch enrolment: malformed rows reported by line and never written;
kill -9 in the middle of a run, rerun: every row enrolled exactly once, no
duplicate serial, audit chain intact."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import SMARTCERT, Deployment, check  # noqa: E402

ROWS = int(os.environ.get("SC_BATCH_ROWS", "3000"))

with Deployment() as d:
    csv = os.path.join(d.tmp, "batch.csv")     # outside the deployment directory
    good = []
    with open(csv, "w", newline="") as f:
        f.write("user_id,name,id_number,dob,profile,key_type\r\n")           # line 1
        f.write('q1,"Quoted, Name",Q0000001,,adult,\r\n')                   # line 2
        f.write('q2,"Two\nLines",Q0000002,2012-05-06,minor,p256\n')          # lines 3-4
        f.write("bad1,Too,Few\n")                                            # line 5
        f.write('bad2,"Unbalanced ""quote,Q0000003,,,\n')                     # line 6 (unterminated)
        f.write("bad 3,Bad Id,Q0000004,,,\n")                                # line 7
        f.write("bad4,Bad Dob,Q0000005,1999-13-40,,\n")                      # line 8
        f.write("bad5,Kid,Q0000006,,minor,\n")                               # line 9 (minor w/o dob)
        f.write("bad6,Same Person,Q000000-1,,,\n")                           # line 10 (dup of q1 after normalising? no: '-' kept)
        f.write("bad7,Dup,q 000 0001,,,\n")                                  # line 11 (same person as q1)
        f.write("bad8,Key,Q0000008,,,ed448\n")                               # line 12
        good += ["q1", "q2", "bad6"]
        for i in range(ROWS):
            f.write(f"u{i:05d},Person {i},B{i:07d}(1),,,\n")
            good.append(f"u{i:05d}")
    bad_lines = {5, 6, 7, 8, 9, 11, 12}

    # first run, killed mid-way
    p = subprocess.Popen([SMARTCERT, "ca", "enrol", "--batch", csv, "--json", "--chunk", "200"],
                         env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and p.poll() is None:
        st = json.loads(d.sc("status", "--json", check=False).stdout or "{}")
        if st.get("store", {}).get("users", 0) >= 400:
            p.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    p.communicate(timeout=60)
    check(killed, "batch killed with SIGKILL mid-run")
    n1 = json.loads(d.sc("status", "--json", check=False).stdout)["store"]["users"]
    check(0 < n1 < len(good), f"partial progress kept: {n1} users")
    r = d.sc("audit", "verify", "--json", check=False)
    check(json.loads(r.stdout)["ok"], "audit chain intact after kill -9")

    # rerun to completion
    r = d.sc("ca", "enrol", "--batch", csv, "--json", check=False, timeout=600)
    res = json.loads(r.stdout)
    check(r.returncode == 1 and res["completed"], f"rerun completes; exit 1 for bad rows ({r.returncode})")
    check(res["enrolled"] + res["skipped"] == len(good), f"every good row accounted {res['enrolled']}+{res['skipped']}")
    check(res["skipped"] >= n1 - 1, "rows committed before the kill are skipped")
    lines = {e["line"] for e in res["errors"]}
    check(lines == bad_lines, f"bad rows reported by line: {sorted(lines)}")
    print("\n".join(f"  line {e['line']}: {e['message']}" for e in res["errors"]))

    certs = d.sc_json("ca", "list")
    users = [c["user"] for c in certs if c["user"]]
    check(sorted(users) == sorted(good), "every good row enrolled exactly once")
    serials = [c["serial"] for c in certs]
    check(len(serials) == len(set(serials)), "no duplicate serial")
    for u in ("bad1", "bad2", "bad 3", "bad4", "bad5", "bad7", "bad8"):
        check(u not in users, f"{u} not written")
    q2 = d.sc_json("ca", "show", "--user", "q2")
    check(q2["name"] == "Two\nLines" and q2["profile"] == "minor", "quoted field with a newline")
    check(d.sc_json("ca", "show", "--user", "q1")["name"] == "Quoted, Name", "quoted comma")
    r = d.sc("audit", "verify", "--json")
    v = json.loads(r.stdout)
    enrols = d.sc_json("audit", "show", "--kind", "enrol")
    check(v["ok"] and len(enrols) == len(good), f"audit verifies; one enrol record per row ({len(enrols)})")

    # a third run changes nothing
    before = d.sc("ca", "list", "--json").stdout
    res = json.loads(d.sc("ca", "enrol", "--batch", csv, "--json", check=False).stdout)
    check(res["enrolled"] == 0 and res["skipped"] == len(good), "third run: all skipped")
    check(d.sc("ca", "list", "--json").stdout == before, "store unchanged")
    for root, _, files in os.walk(d.dir):
        for f_ in files:
            data = open(os.path.join(root, f_), "rb").read()
            if b"B0000017" in data or b"Q0000002" in data:
                check(False, f"ID number found in {f_}")
    check(True, "no batch ID number under the deployment")
print("PASS")
