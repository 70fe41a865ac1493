#!/usr/bin/env python3
"""Java 17 PKIX as the judge: a small Java program (tests/lib/PkixCheck.java)
validates the whole path (holder, issuing CA, root as trust anchor) with
revocation checking of every certificate and the adult policy required
explicitly, in OCSP mode and in CRL mode, fetching everything from the
URLs in the certificates (AIA OCSP, CRL distribution points), all served by
smartcert-ocspd on 127.0.0.1.

- a good path is VALID in both modes; requiring the minor policy of an
  adult's certificate is a policy failure (the CA certificates carry the
  policies);
- without the root's CRL, CRL mode cannot check the issuing CA: it fails at
  index 1 (the issuing CA), so the root's CRL is what lets it finish;
- a keyCompromise revocation with an invalidity date is REVOKED through
  OCSP at once, with the invalidity date Java reads from the answer;
- published only in a delta CRL it stays invisible to Java (it ignores
  deltas); `crl publish --watch` republishes the partition's full CRL with
  the batch, and Java in CRL mode then says REVOKED with reasonCode and
  invalidityDate, as through OCSP;
- a revocation batched by the watcher (superseded, batch 1 s) is REVOKED
  for Java in CRL mode within that batch.
"""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import Responder, check, enrol, fail, free_port, stop_child  # noqa: E402
from scfixture import SMARTCERT, Deployment, skip_unless  # noqa: E402

skip_unless("java", "javac")
ADULT, MINOR = "2.999.4109.1.1", "2.999.4109.1.2"
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "lib", "PkixCheck.java")


def java(d, classes, mode, leaf, policy=ADULT):
    r = subprocess.run(["java", "-cp", classes, "PkixCheck", mode, d.info["root_ca"], policy,
                        leaf, d.info["issuing_ca"]],
                       capture_output=True, text=True, timeout=120)
    line = (r.stdout.strip().splitlines() or [""])[-1]
    print(f"# java {mode} {os.path.basename(leaf)}: exit {r.returncode}: {line}")
    if r.returncode not in (0, 1, 2):
        fail(f"PkixCheck failed to run ({r.returncode}): {r.stderr[-600:]}")
    return r.returncode, line


def watcher_events(p, q):
    for line in p.stdout:
        q.put(line)
    q.put(None)


def wait_event(q, pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            continue
        if line is None:
            fail("the watcher exited")
        ev = json.loads(line)
        if ev.get("event") == "failed":
            fail(f"the watcher failed: {ev}")
        if pred(ev):
            return ev
    return None


port = free_port()
base = f"http://127.0.0.1:{port}"
with Deployment("--ocsp-url", f"{base}/ocsp", "--crl-url", f"{base}/crl",
                "--issuers-url", f"{base}/ca/issuing-ca.crt") as d:
    classes = os.path.join(d.tmp, "classes")
    os.makedirs(classes)
    r = subprocess.run(["javac", "-d", classes, SOURCE], capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        fail(f"javac PkixCheck.java: {r.stderr}")
    _, _, good = enrol(d, "jgood")
    _, bad_hex, bad = enrol(d, "jbad")
    _, later_hex, later = enrol(d, "jlater")
    d.sc("crl", "publish")
    with Responder(d, port=port) as resp:
        code, line = java(d, classes, "ocsp", good)
        check(code == 0, f"OCSP mode, whole path, adult policy required: VALID ({line})")
        code, line = java(d, classes, "crl", good)
        check(code == 0, f"CRL mode, whole path, adult policy required: VALID ({line})")
        code, line = java(d, classes, "ocsp", good, MINOR)
        check(code == 2 and "INVALID_POLICY" in line,
              f"the minor policy required of an adult's certificate: INVALID_POLICY ({line})")
        root_crl = os.path.join(d.dir, "crl", "root.crl")
        os.rename(root_crl, root_crl + ".away")
        code, line = java(d, classes, "crl", good)
        os.rename(root_crl + ".away", root_crl)
        check(code == 2 and "index=1" in line,
              f"without the root's CRL the issuing CA (index 1) cannot be checked ({line})")

        d.sc("ca", "revoke", "--serial", bad_hex, "--reason", "keyCompromise",
             "--invalidity-date", "2026-01-02T03:04:05Z")
        code, line = java(d, classes, "ocsp", bad)
        check(code == 1 and "reason=KEY_COMPROMISE" in line and "index=0" in line and
              "2.5.29.24" in line and "1.3.36.8.3.13" in line and
              "invalidity=2026-01-02T03:04:05Z" in line,
              f"OCSP mode: REVOKED at once, keyCompromise, with the invalidity date ({line})")
        d.sc("crl", "publish", "--delta")
        code, line = java(d, classes, "crl", bad)
        check(code == 0,
              f"CRL mode with the revocation only in a delta: Java ignores deltas ({line})")

        w = subprocess.Popen([SMARTCERT, "crl", "publish", "--watch", "--poll", "1", "--batch",
                              "1", "--json"], env=d.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        q = queue.Queue()
        threading.Thread(target=watcher_events, args=(w, q), daemon=True).start()
        try:
            check(wait_event(q, lambda ev: ev["full"], 60) is not None,
                  "the watcher published a full set at start")
            code, line = java(d, classes, "crl", bad)
            check(code == 1 and "reason=KEY_COMPROMISE" in line and "2.5.29.21" in line and
                  "2.5.29.24" in line and "invalidity=2026-01-02T03:04:05Z" in line,
                  f"CRL mode: REVOKED with reasonCode and invalidityDate, as OCSP says ({line})")
            t0 = time.monotonic()
            d.sc("ca", "revoke", "--serial", later_hex, "--reason", "superseded")
            ev = wait_event(q, lambda ev: not ev["full"] and ev["partitions_full"] >= 1, 30)
            check(ev is not None, f"the watcher published the batch with its partition ({ev})")
            code, line = java(d, classes, "crl", later)
            took = time.monotonic() - t0
            check(code == 1 and "reason=SUPERSEDED" in line,
                  f"CRL mode sees a batched revocation within the batch: REVOKED "
                  f"{took:.1f} s after the revocation ({line})")
        finally:
            stop_child(w)
        check(w.returncode == 0, "the watcher stopped cleanly")
print("all Java PKIX checks passed")
