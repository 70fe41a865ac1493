#!/usr/bin/env python3
"""Status changes made by `smartcert ca` in another process are answered by
the very next OCSP response, with no restart and no wait: revoke (after a
pre-signed "good" was stored), suspend -> revoked/certificateHold, resume ->
good; for sha1 (pre-signed) and sha256 (cached) CertIDs, GET and POST."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (Responder, make_request, verify_response, statuses, check,  # noqa: E402
                      ocsp, x509, enrol, wait_stored)
from scfixture import Deployment, skip_unless  # noqa: E402

skip_unless("openssl")
GOOD = ocsp.OCSPCertStatus.GOOD
REVOKED = ocsp.OCSPCertStatus.REVOKED


def status_all(r, d, serial):
    """(POST sha1, GET sha1, POST sha256, GET sha256) statuses."""
    out = []
    for alg in ("sha1", "sha256"):
        req = make_request(d, [serial], alg)
        for der in (r.post(req), r.get(req)):
            out.append(statuses(verify_response(d, der))[0])
    return out


with Deployment() as d:
    c_serial, c_hex, _ = enrol(d, "carol")
    e_serial, e_hex, _ = enrol(d, "erin")
    with Responder(d) as r:
        # warm: pre-signed entries and sha256 cache hold "good"
        check(all(s[1] == GOOD for s in status_all(r, d, c_serial)), "carol good")
        check(wait_stored(r, 1), "carol's response stored")
        check(all(s[1] == GOOD for s in status_all(r, d, c_serial)),
              "carol good (pre-signed and cached)")
        m = r.metrics()
        check('smartcert_ocsp_presigned_total{event="hit"}' in m and
              'event="hit"} 0\n' not in m, "pre-signed entries are being served")

        d.sc("ca", "revoke", "--serial", c_hex, "--reason", "keyCompromise")
        t0 = time.monotonic()
        first = statuses(verify_response(d, r.get(make_request(d, [c_serial]))))[0]
        dt = (time.monotonic() - t0) * 1000
        check(first[1] == REVOKED and first[2] == x509.ReasonFlags.key_compromise,
              f"very next GET after revoke commit says revoked ({dt:.1f} ms)")
        check(all(s[1] == REVOKED and s[2] == x509.ReasonFlags.key_compromise
                  for s in status_all(r, d, c_serial)),
              "every form (POST/GET, sha1/sha256) says revoked keyCompromise")

        # suspend -> hold -> resume
        check(all(s[1] == GOOD for s in status_all(r, d, e_serial)), "erin good")
        d.sc("ca", "suspend", "--user", "erin")
        sts = status_all(r, d, e_serial)
        check(all(s[1] == REVOKED and s[2] == x509.ReasonFlags.certificate_hold for s in sts),
              "suspend: revoked/certificateHold at once, every form")
        d.sc("ca", "resume", "--user", "erin")
        sts = status_all(r, d, e_serial)
        check(all(s[1] == GOOD for s in sts), "resume: good again at once, every form")

        # many flips in a row: never a stale answer
        for i in range(3):
            d.sc("ca", "suspend", "--user", "erin")
            s = statuses(verify_response(d, r.post(make_request(d, [e_serial]))))[0]
            check(s[1] == REVOKED, f"flip {i}: held")
            d.sc("ca", "resume", "--user", "erin")
            s = statuses(verify_response(d, r.post(make_request(d, [e_serial]))))[0]
            check(s[1] == GOOD, f"flip {i}: good")
print("all lifecycle checks passed")
