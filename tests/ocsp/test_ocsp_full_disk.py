#!/usr/bin/env python3
"""The OCSP responder on a real full disk (tests/lib/fulldisk.py: a 48 MiB
tmpfs in a private user+mount namespace holds the token, the store and the
daemon's log; skipped where that is not possible).

With the disk full, a reader snapshot held, and the pages the store could
still reuse used up (enrolling until refused, then asking about certificates
nobody had asked about until storing two answers in a row failed, each
answered good meanwhile), the daemon keeps answering: a certificate nobody had
asked about is signed on demand, answered good and verified, while storing
that answer fails and is counted in smartcert_ocsp_errors_total{kind="store"};
asked again it is still answered; the certificate answered before the disk
filled is served from the store; /healthz says ok although the log file
cannot grow.  `ca revoke` on the full disk fails with exit 7, and the
certificate is still answered good, which is the truth: the revocation was
not applied.  Once space is freed the same revoke succeeds, the very next
answer says revoked, and storing answers works again.  The daemon exits 0 on
SIGTERM."""
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB",
                                  os.path.join(os.path.dirname(__file__), "..", "lib")))
import fulldisk  # noqa: E402

MNT = fulldisk.enter("48m")     # from here on, inside the namespace
from ocsptest import (Responder, make_request, verify_response, check, fail,  # noqa: E402
                      ocsp, enrol, metric, set_ocsp_option, wait_stored)
from scfixture import Deployment  # noqa: E402

LEAVE = 0                   # an answer's write needs only a few 4 KiB pages
EXIT_STORE = 7
STORE_ERRORS = 'smartcert_ocsp_errors_total{kind="store"}'
STORED = 'smartcert_ocsp_presigned_total{event="stored"}'


def status(r, d, serial):
    return verify_response(d, r.post(make_request(d, [serial]))).certificate_status


def store_outcome(r, ask, timeout=20.0):
    """(what ask() returned, "stored" | "error" | "none"): the outcome of
    the one store attempt that follows an answer not yet stored."""
    stored0, errors0 = metric(r, STORED), metric(r, STORE_ERRORS)
    answer = ask()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored, errors = metric(r, STORED), metric(r, STORE_ERRORS)
        if stored > stored0 and errors == errors0:
            return answer, "stored"
        if errors > errors0 and stored == stored0:
            return answer, "error"
        if stored > stored0 or errors > errors0:
            return answer, f"both ({stored - stored0:.0f} stored, {errors - errors0:.0f} errors)"
        time.sleep(0.02)
    return answer, "none"


pin = None
try:
    with Deployment() as d:
        store = os.path.join(d.dir, "store")
        dev = os.stat(MNT).st_dev
        for p in (d.dir, os.path.join(d.dir, "hsm"), store, d.tmp):
            if os.stat(p).st_dev != dev:
                fail(f"{p} is not on the test file system")
        check(True, f"token, store and the daemon's log on the tmpfs at {MNT}")
        set_ocsp_option(d, "sign_ahead_per_second", "0")
        amy, _, _ = enrol(d, "amy")
        ben, ben_hex, _ = enrol(d, "ben")
        cat, _, _ = enrol(d, "cat")
        spares = [enrol(d, f"spare{i:02d}")[0] for i in range(24)]

        with Responder(d) as r:
            check(status(r, d, amy) == ocsp.OCSPCertStatus.GOOD, "amy good before the disk fills")
            check(wait_stored(r, 1), "amy's answer stored")

            pin = fulldisk.Pin(store)
            fulldisk.fill(MNT, LEAVE)
            check(fulldisk.free_bytes(MNT) == LEAVE, f"disk full: {LEAVE} bytes left")
            # Use up the pages the store may still reuse: enrol until refused,
            # then ask about certificates nobody asked about until storing
            # their answers fails.
            for i in range(200):
                env = dict(d.env, SC_TEST_IDNUM=f"B{i:06d}(1)")
                rv = d.sc("ca", "enrol", "--user", f"filler{i}", "--name", "Filler",
                          "--id-number-source", "env:SC_TEST_IDNUM", env=env, check=False)
                if rv.returncode != 0:
                    break
            check(rv.returncode == EXIT_STORE, f"enrolment refused on the full disk after {i} "
                  f"(exit {rv.returncode}: {rv.stderr.strip()})")
            # Each answer to a certificate nobody asked about is followed by
            # one attempt to store it: stored, or a store error.  Go on until
            # two attempts in a row have failed.
            failed_in_row = 0
            for n, serial in enumerate(spares, 1):
                outcome = store_outcome(r, lambda: status(r, d, serial))
                if outcome[0] != ocsp.OCSPCertStatus.GOOD:
                    fail(f"spare certificate {n} not answered good on the full disk")
                failed_in_row = failed_in_row + 1 if outcome[1] == "error" else 0
                if failed_in_row == 2:
                    break
            check(failed_in_row == 2, f"storing answers fails on the full disk and is counted "
                  f"({n} asked, each answered good and verified)")

            answer, outcome = store_outcome(r, lambda: status(r, d, ben))
            check(answer == ocsp.OCSPCertStatus.GOOD,
                  "ben, never asked before, is signed on demand: good, verified")
            check(outcome == "error",
                  f"storing ben's answer failed and is counted as a store error ({outcome})")
            check(status(r, d, ben) == ocsp.OCSPCertStatus.GOOD, "ben asked again: good")
            check(status(r, d, amy) == ocsp.OCSPCertStatus.GOOD, "amy: good, from the store")
            with urllib.request.urlopen(r.url + "/healthz", timeout=10) as u:
                check(u.status == 200, "/healthz ok on the full disk")

            rv = d.sc("ca", "revoke", "--serial", ben_hex, "--reason", "keyCompromise",
                      check=False)
            check(rv.returncode == EXIT_STORE and "free disk space" in rv.stderr,
                  f"ca revoke on the full disk: exit {EXIT_STORE}, says to free disk space "
                  f"(got {rv.returncode}: {rv.stderr.strip()})")
            check(status(r, d, ben) == ocsp.OCSPCertStatus.GOOD,
                  "the revocation was not applied, and ben is still answered good")
            check(r.proc.poll() is None, "the daemon still runs")

            pin.release()
            pin = None
            fulldisk.release(MNT)
            d.sc("ca", "revoke", "--serial", ben_hex, "--reason", "keyCompromise")
            check(status(r, d, ben) == ocsp.OCSPCertStatus.REVOKED,
                  "space freed: the revoke succeeds and the very next answer is revoked")
            answer, outcome = store_outcome(r, lambda: status(r, d, cat))
            check(answer == ocsp.OCSPCertStatus.GOOD and outcome == "stored",
                  f"cat good, and its answer stored again ({outcome})")
finally:
    if pin is not None:
        pin.release()
check(fulldisk.leave(MNT), "tmpfs unmounted")
print("all full-disk OCSP checks passed")
