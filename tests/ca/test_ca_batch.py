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

ROWS = int(os.environ.get("SC_BATCH_ROWS", "1500"))

with Deployment() as d:
    # A few key groups: each group's HSM key is made by the first key in
    # it (tens of milliseconds on SoftHSMv2), and this test is about rows,
    # not groups; the first rows still make them, from several threads.
    d.conf_set("ca.key_groups", "8", restart=False)
    csv = os.path.join(d.tmp, "batch.csv")     # outside the deployment directory
    good = []
    # Malformed rows come last, the unbalanced quote on the very last line:
    # read from a pipe (no seeking back), an open quote runs on until it
    # closes, 64 KiB or the end of input.
    with open(csv, "w", newline="") as f:
        f.write("user_id,name,id_number,dob,profile,key_type\r\n")           # line 1
        f.write('q1,"Quoted, Name",Q0000001,,adult,\r\n')                   # line 2
        f.write('q2,"Two\nLines",Q0000002,2012-05-06,minor,p256\n')          # lines 3-4
        good += ["q1"]          # q2: parsed whole, then refused (a newline in a name)
        for i in range(ROWS):                                                # lines 5..
            f.write(f"u{i:05d},Person {i},B{i:07d}(1),,,\n")
            good.append(f"u{i:05d}")
        n = 5 + ROWS
        f.write("bad1,Too,Few\n")                                            # n
        f.write("bad 3,Bad Id,Q0000004,,,\n")                                # n+1
        f.write("bad4,Bad Dob,Q0000005,1999-13-40,,\n")                      # n+2
        f.write("bad5,Kid,Q0000006,,minor,\n")                               # n+3 (minor w/o dob)
        f.write("bad6,Not The Same,Q000000-1,,,\n")                          # n+4 (good: '-' is kept)
        f.write("bad7,Dup,q 000 0001,,,\n")                                  # n+5 (same person as q1)
        f.write("bad8,Key,Q0000008,,,ed448\n")                               # n+6
        f.write('bad2,"Unbalanced ""quote,Q0000003,,,\n')                     # n+7 (unterminated)
        good.append("bad6")
    bad_lines = {3, n, n + 1, n + 2, n + 3, n + 5, n + 6, n + 7}

    # first run, killed mid-way.  The rows come through a FIFO that stays
    # open, and only the first 600 of them before the kill, so the run can
    # neither end nor enrol every row before it however fast it is.
    fifo = os.path.join(d.tmp, "batch.fifo")
    os.mkfifo(fifo)
    p = subprocess.Popen([SMARTCERT, "ca", "enrol", "--batch", fifo, "--json", "--chunk", "200"],
                         env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    feed = open(fifo, "w")
    feed.write("".join(open(csv, newline="").read().splitlines(keepends=True)[:4 + 600]))
    feed.flush()
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and p.poll() is None:
        st = json.loads(d.sc("status", "--json", check=False).stdout or "{}")
        if st.get("store", {}).get("users", 0) >= 400:
            p.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    if p.poll() is None and not killed:
        p.kill()                     # never reached 400 users: fail below, do not hang
    out, err = p.communicate(timeout=60)
    try:
        feed.close()
    except BrokenPipeError:
        pass
    check(killed and p.returncode == -signal.SIGKILL,
          f"batch killed with SIGKILL mid-run ({p.returncode}: {err.decode(errors='replace')[-300:]})")
    n1 = json.loads(d.sc("status", "--json", check=False).stdout)["store"]["users"]
    check(0 < n1 < len(good), f"partial progress kept: {n1} users")
    st = json.loads(d.sc("status", "--json").stdout)["store"]
    check(st["users"] == st["keys"] == st["certs"] - 3,
          f"no user half-enrolled: users == keys == holder certificates {st}")
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
    check(all(len(x) == 32 and int(x[0], 16) < 8 and int(x[:2], 16) > 0 for x in serials),
          "every serial: 16 bytes, positive DER (top bit clear), minimal (first byte non-zero)")
    for u in ("bad1", "bad2", "bad 3", "bad4", "bad5", "bad7", "bad8"):
        check(u not in users, f"{u} not written")
    check("q2" not in users and any(e["line"] == 3 and "U+000A" in e["message"]
                                    for e in res["errors"]),
          "quoted field with a newline: read as one field of line 3, whose name is then "
          "refused (a control character), and the rows after it read right")
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
    for u in ("q1", "u00000", f"u{ROWS - 1:05d}"):
        sh = d.sc_json("ca", "show", "--user", u)
        check(len(sh["keys"]) == 1 and sh["keys"][0]["blob_present"] and len(sh["certificates"]) == 1
              and sh["certificates"][0]["serial"] == sh["keys"][0]["cert_serial"],
              f"{u}: one wrapped key bound to one certificate")

    # a spreadsheet's byte order mark before the header is skipped; a NUL
    # inside a quoted field makes its row malformed (it must never cut the
    # user id or the ID number short) and costs that row only
    bom = os.path.join(d.tmp, "bom.csv")
    with open(bom, "wb") as f:
        f.write(b"\xef\xbb\xbfuser_id,name,id_number\r\n")
        f.write(b'"n1\x00evil",N One,"N0000001\x00999"\r\n')
        f.write(b"n2,N Two,N0000002\r\n")
    r = d.sc("ca", "enrol", "--batch", bom, "--json", check=False)
    res = json.loads(r.stdout)
    users = {c["user"] for c in d.sc_json("ca", "list")}
    check(r.returncode == 1 and res["enrolled"] == 1 and [e["line"] for e in res["errors"]] == [2]
          and "NUL" in r.stderr and "n2" in users and "n1" not in users,
          f"BOM skipped, NUL in a quoted field refused on its line: {res} {r.stderr.strip()}")

    # through a pipe too (no seeking back): a byte order mark is skipped; a
    # first byte that only begins one is kept, so the header is not
    # recognised and that is what the error says
    def batch_pipe(data):
        return subprocess.run([SMARTCERT, "ca", "enrol", "--batch", "/dev/stdin", "--json"],
                              env=d.env, input=data, capture_output=True, timeout=300)
    r = batch_pipe(b"\xef\xbb\xbfuser_id,name,id_number\np1,P One,P0000001\n")
    check(r.returncode == 0 and "p1" in {c["user"] for c in d.sc_json("ca", "list")},
          f"BOM skipped on a pipe: {r.returncode} {r.stderr.decode().strip()}")
    r = batch_pipe(b"\xefuser_id,name,id_number\np2,P Two,P0000002\n")
    err = r.stderr.decode()
    check(r.returncode == 2 and "header must name" in err and "from its start" not in err
          and "p2" not in {c["user"] for c in d.sc_json("ca", "list")},
          f"a lone 0xEF on a pipe: exit 2, the header is not recognised ({r.returncode} {err.strip()})")

    # in a file, an unbalanced quote in the middle costs its own line only
    mid = os.path.join(d.tmp, "mid.csv")
    with open(mid, "w") as f:
        f.write("user_id,name,id_number\nm1,M One,M0000001\n")
        f.write('m2,"Open quote,M0000002\n')
        f.write("m3,M Three,M0000003\nm4,M Four,M0000004\n")
    r = d.sc("ca", "enrol", "--batch", mid, "--json", check=False)
    res = json.loads(r.stdout)
    check(r.returncode == 1 and res["enrolled"] == 3 and [e["line"] for e in res["errors"]] == [3]
          and "line 3" in r.stderr, f"unbalanced quote mid-file: line 3 only {res}")

    # a terminal gets a progress bar with rate and ETA; a pipe gets a JSON
    # summary without --json
    small = os.path.join(d.tmp, "small.csv")
    with open(small, "w") as f:
        f.write("user_id,name,id_number\n")
        for i in range(20):
            f.write(f"t{i},Tty {i},T{i:07d}\n")
    import pty
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(SMARTCERT, [SMARTCERT, "ca", "enrol", "--batch", small], d.env)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    check(os.waitstatus_to_exitcode(status) == 0, "batch on a terminal succeeds")
    check("rows/s" in text and "ETA" in text and "20/20" in text and "100%" in text,
          f"terminal: progress bar with rate and ETA: {text.strip()!r}")
    check("20 rows: 20 enrolled" in text, "terminal: human summary")
    r = d.sc("ca", "enrol", "--batch", small)
    res = json.loads(r.stdout)
    check(res["completed"] and res["skipped"] == 20 and "rate_per_second" in res,
          "not a terminal: a JSON summary without --json")
    check("ETA" not in r.stderr, "no progress bar when not on a terminal")
    for root, _, files in os.walk(d.dir):
        for f_ in files:
            if not os.path.isfile(os.path.join(root, f_)):
                continue            # the service's socket
            data = open(os.path.join(root, f_), "rb").read()
            if b"B0000017" in data or b"Q0000002" in data:
                check(False, f"ID number found in {f_}")
    check(True, "no batch ID number under the deployment")
print("PASS")
