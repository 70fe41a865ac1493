#!/usr/bin/env python3
"""Status changes made by `smartcert ca` in another process are answered by
the very next OCSP response, with no restart and no wait: revoke (after a
pre-signed "good" was stored), suspend -> revoked/certificateHold, resume ->
good; for sha1 (pre-signed) and sha256 (cached) CertIDs, GET and POST.  The
daemon also signs the new answer itself as soon as it sees the change in
the revocation log, so the next relying party is served from the store,
and signs ahead, at start, the answers of certificates nobody asked about."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (Responder, make_request, verify_response, statuses, check,  # noqa: E402
                      ocsp, x509, enrol, wait_stored, metric)
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
    h_serial, h_hex, _ = enrol(d, "heidi")
    with Responder(d) as r:
        # signed ahead: the daemon signs and stores the answers of the four
        # certificates it serves (three users and its own OCSP signer)
        # before anyone asks, so the first request is served from the store
        key = 'smartcert_ocsp_presigned_total{event="ahead"}'
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and metric(r, key) < 4:
            time.sleep(0.02)
        check(metric(r, key) == 4, "the four certificates' answers signed ahead at start")
        check(statuses(verify_response(d, r.post(make_request(d, [c_serial]))))[0][1] == GOOD
              and metric(r, 'smartcert_ocsp_presigned_total{event="hit"}') == 1
              and metric(r, "smartcert_ocsp_signatures_total") == 0,
              "the first request ever is served from the store, no signing")
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

        # re-signed by the daemon on the status change, before anyone asks:
        # each of the 10 status changes above and below is one revocation-log
        # event; wait until the daemon has handled all of them
        check(statuses(verify_response(d, r.post(make_request(d, [h_serial]))))[0][1] == GOOD,
              "heidi good")
        d.sc("ca", "revoke", "--serial", h_hex, "--reason", "affiliationChanged")
        key = 'smartcert_ocsp_presigned_total{event="resigned_changed"}'
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and metric(r, key) < 10:
            time.sleep(0.02)
        check(metric(r, key) == 10,
              "the daemon re-signed the answer of every status change, unasked")
        sigs = metric(r, "smartcert_ocsp_signatures_total")
        hits = metric(r, 'smartcert_ocsp_presigned_total{event="hit"}')
        s = statuses(verify_response(d, r.get(make_request(d, [h_serial]))))[0]
        check(s[1] == REVOKED and s[2] == x509.ReasonFlags.affiliation_changed,
              "heidi revoked affiliationChanged")
        check(metric(r, "smartcert_ocsp_signatures_total") == sigs
              and metric(r, 'smartcert_ocsp_presigned_total{event="hit"}') == hits + 1,
              "served from the store, no signing on the request path")
print("all lifecycle checks passed")
