"""`smartcert crl publish --watch`: publishes a full set at start, a delta
at once after a keyCompromise revocation, a delta within the batch window
after other revocations, and stops cleanly on SIGTERM.  With each delta it
republishes the full CRL of every partition that changed (and only those),
so a relying party that ignores deltas (Java) sees the revocation within
the batch too."""
import json
import os
import queue
import signal
import subprocess
import threading
import time

from crlcommon import Deployment, check, crl_dir, crllint, fail, fill, lint_all, load
from scfixture import SMARTCERT

BATCH = 3


def reader(stream, q):
    for line in stream:
        q.put(line)
    q.put(None)


def next_event(q, timeout):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:
            fail("watcher exited early")
        ev = json.loads(line)
        if ev.get("event") == "failed":
            fail(f"watcher reported a failure: {ev}")
        return ev


with Deployment() as d:
    fill(d, "--certs", "1000", "--revoked", "100")
    env = dict(d.env, CRL_TEST_IDNUM="W123456(7)")
    enr = json.loads(d.sc("ca", "enrol", "--user", "watch-user", "--name", "Watch Holder",
                          "--id-number-source", "env:CRL_TEST_IDNUM", "--json", env=env).stdout)
    p = subprocess.Popen([SMARTCERT, "crl", "publish", "--watch", "--poll", "1", "--batch",
                          str(BATCH), "--json"], env=d.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    q = queue.Queue()
    threading.Thread(target=reader, args=(p.stdout, q), daemon=True).start()
    try:
        ev = next_event(q, 60)
        check(ev is not None and ev["full"] and ev["why"] == "start",
              f"watcher publishes everything at start ({ev})")
        start_number = ev["number"]
        check(0 < ev["full_every"] <= 6 * 3600 and ev["full_every"] <= 24 * 3600 // 2 and
              ev["batch"] == BATCH,
              f"default schedule: everything every {ev['full_every']}s (at most 6 h, half of "
              f"the 24 h nextUpdate), deltas {ev['batch']}s after a revocation")

        t0 = time.monotonic()
        d.sc("ca", "revoke", "--serial", enr["serial"], "--reason", "keyCompromise")
        ev = next_event(q, 30)
        took = time.monotonic() - t0
        check(ev is not None and not ev["full"] and "keyCompromise" in ev["why"] and took < 10,
              f"keyCompromise: delta published after {took:.1f}s ({ev})")
        dl = load(os.path.join(crl_dir(d), f"part-{enr['partition']}-delta.crl"))
        check(int(enr["serial"], 16) in {e.serial_number for e in dl} and
              crllint.delta_base(dl) == start_number,
              "the delta lists the compromised certificate against the start set")
        part = load(os.path.join(crl_dir(d), f"part-{enr['partition']}.crl"))
        check(ev["partitions_full"] == 1 and crllint.crl_number(part) == ev["number"] and
              int(enr["serial"], 16) in {e.serial_number for e in part},
              "its partition's full CRL is republished in the same batch and lists it")
        numbers = [crllint.crl_number(load(os.path.join(crl_dir(d), f"part-{n}.crl")))
                   for n in range(16)]
        check(sorted(numbers).count(ev["number"]) == 1 and
              crllint.crl_number(load(os.path.join(crl_dir(d), "full.crl"))) == start_number,
              "no other partition's full CRL, nor full.crl, is rewritten")
        kc_number = ev["number"]

        t0 = time.monotonic()
        fill(d, "--certs", "1000", "--more", "5")
        ev = next_event(q, 60)
        took = time.monotonic() - t0
        check(ev is not None and not ev["full"] and took < 60,
              f"other revocations: delta published after {took:.1f}s (batch {BATCH}s) ({ev})")
        fd = load(os.path.join(crl_dir(d), "full-delta.crl"))
        check(len(fd) == 6, f"full-delta.crl holds the 6 changes since the start set ({len(fd)})")
        new = {e.serial_number for e in fd} - {int(enr["serial"], 16)}
        parts = {n: load(os.path.join(crl_dir(d), f"part-{n}.crl")) for n in range(16)}
        fresh = {n for n, c in parts.items() if crllint.crl_number(c) == ev["number"]}
        holding = {n for n, c in parts.items() if new & {e.serial_number for e in c}}
        check(holding == fresh and len(fresh) == ev["partitions_full"] and
              new <= set().union(*({e.serial_number for e in parts[n]} for n in fresh)),
              f"the {len(fresh)} partitions with a new revocation are republished in full "
              "and list every one of them; the others are left as they were")
        check(crllint.crl_number(parts[enr["partition"]]) in (kc_number, ev["number"]),
              "the keyCompromise partition keeps its entry")
        ev = next_event(q, BATCH + 3)
        check(ev is None, "no publish while nothing changes")
        lint_all(d)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            fail("watcher did not stop on SIGTERM")
    check(rc == 0, f"watcher stops cleanly on SIGTERM (exit {rc})")
