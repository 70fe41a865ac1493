#!/usr/bin/env python3
"""Re-signing before nextUpdate through the daemon.  The clock is
SMARTCERT_FAKE_TIME (sc_now), frozen per process, so the test does not wait
for real time to pass: a daemon at T signs and stores a response valid
T..T+60 (ocsp.validity_seconds = 60, the minimum); a daemon at T+35, past
half of that validity and 25 s before its nextUpdate, re-signs it in its
background loop (signing ahead is off, so that loop is the only way) and
serves the new response (thisUpdate T+35, nextUpdate T+95) from the store.
Every response seen in between is unexpired at the daemon's clock and
verifies; the final one is also checked by `openssl ocsp -respin -CAfile`."""
import datetime
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (Responder, make_request, verify_response, check, fail,  # noqa: E402
                      ocsp, enrol, set_ocsp_option, wait_stored, metric)
from scfixture import Deployment, skip_unless, need_test_hooks  # noqa: E402

need_test_hooks()

skip_unless("openssl")
GOOD = ocsp.OCSPCertStatus.GOOD
VALIDITY = 60
HIT = 'smartcert_ocsp_presigned_total{event="hit"}'
RESIGNED = 'smartcert_ocsp_presigned_total{event="resigned"}'
AHEAD = 'smartcert_ocsp_presigned_total{event="ahead"}'


def epoch(dt):
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp())


def times(resp):
    this_u = getattr(resp, "this_update_utc", None) or resp.this_update
    next_u = getattr(resp, "next_update_utc", None) or resp.next_update
    return epoch(this_u), epoch(next_u)


def at(d, t):
    return dict(d.env, SMARTCERT_FAKE_TIME=str(t))


with Deployment() as d:
    serial, _, _ = enrol(d, "rita")
    set_ocsp_option(d, "validity_seconds", VALIDITY)
    set_ocsp_option(d, "sign_ahead_per_second", 0)
    req = make_request(d, [serial])
    T = int(time.time())

    with Responder(d, env=at(d, T)) as r:
        resp = verify_response(d, r.post(req))
        check(resp.certificate_status == GOOD and times(resp) == (T, T + VALIDITY),
              f"daemon at T: good, thisUpdate T, nextUpdate T+{VALIDITY}")
        check(wait_stored(r, 1), "the response is stored (pre-signed)")
        resp = verify_response(d, r.post(req))
        check(times(resp) == (T, T + VALIDITY) and metric(r, HIT) >= 1,
              "daemon at T: the second answer is the stored one")
        old = r.post(req)

    now = T + 35   # past half of the validity, before nextUpdate
    with Responder(d, env=at(d, now)) as r:
        seen = []
        new = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            der = r.post(req)
            resp = verify_response(d, der)
            tu, nu = times(resp)
            seen.append((tu, nu))
            if resp.certificate_status != GOOD or nu <= now or tu > now:
                fail(f"daemon at T+35 served thisUpdate T{tu - T:+d} nextUpdate "
                     f"T{nu - T:+d} ({resp.certificate_status})")
            if tu == now:
                new = der
                break
            time.sleep(0.05)
        check(new is not None and times(ocsp.load_der_ocsp_response(new)) ==
              (now, now + VALIDITY),
              f"daemon at T+35 re-signed: thisUpdate T+35, nextUpdate T+{35 + VALIDITY} "
              f"({len(seen)} answers, all unexpired and verified)")
        check(new != old, "the re-signed response differs from the old one")
        # the re-signed response is served from the store, not signed per request
        hits = metric(r, HIT)
        check(r.post(req) == new and metric(r, HIT) == hits + 1,
              "the re-signed response is served from the store")
        check(metric(r, RESIGNED) >= 1 and metric(r, AHEAD) == 0,
              "re-signed by the before-nextUpdate loop (resigned >= 1, ahead 0)")

        path = os.path.join(d.tmp, "resigned.der")
        with open(path, "wb") as f:
            f.write(new)
        p = subprocess.run(["openssl", "ocsp", "-respin", path, "-issuer", d.info["issuing_ca"],
                            "-CAfile", d.info["chain"], "-serial", str(serial)],
                           capture_output=True, text=True, timeout=60)
        out = p.stdout + p.stderr
        check(p.returncode == 0 and "Response verify OK" in out and ": good" in out
              and "Status times invalid" not in out,
              "openssl ocsp -respin -CAfile: re-signed response verified, good, times valid")

    # Near the end of the signer certificate's life nextUpdate is capped at
    # its notAfter, so re-signing such an answer cannot move it on: the
    # loop re-signs only what a new signature extends.  At E, 20 s before
    # the signer expires (less than half the validity): rita's answer,
    # signed at E - 60, ends at E and is due; sam's, signed at E - 40, ends
    # at the signer's notAfter and is not.
    from cryptography import x509 as _x509
    with open(d.info["ocsp_cert"], "rb") as f:
        signer_end = epoch(_x509.load_pem_x509_certificate(f.read()).not_valid_after)
    E = signer_end - 20
    sam, _, _ = enrol(d, "sam")
    req_sam = make_request(d, [sam])
    with Responder(d, env=at(d, E - 60)) as r:
        check(times(verify_response(d, r.post(req))) == (E - 60, E), "rita at E-60: nextUpdate E")
        check(wait_stored(r, 1), "rita's answer stored")
    with Responder(d, env=at(d, E - 40)) as r:
        check(times(verify_response(d, r.post(req_sam))) == (E - 40, signer_end),
              "sam at E-40: nextUpdate at the signer's notAfter")
        check(wait_stored(r, 1), "sam's answer stored")
    with Responder(d, env=at(d, E)) as r:
        deadline = time.monotonic() + 20
        while metric(r, RESIGNED) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        check(metric(r, RESIGNED) == 1,
              f"the loop re-signs rita's answer and not sam's capped one "
              f"(resigned {metric(r, RESIGNED)})")
        check(times(verify_response(d, r.post(req))) == (E, signer_end),
              "rita's re-signed answer ends at the signer's notAfter")
print("all re-sign checks passed")
