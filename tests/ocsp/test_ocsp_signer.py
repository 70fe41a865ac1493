#!/usr/bin/env python3
"""The delegated OCSP signer is short-lived and renewed before it expires.

- `smartcert init` makes it for 4 days (ca.ocsp_signer_days), with
  id-pkix-ocsp-nocheck and OCSPSigning, key in the HSM; no answer's
  nextUpdate goes past its notAfter; `ca ocsp-signer` says it is not due.
- A responder whose signer has expired (clock 5 days ahead, set with
  SMARTCERT_FAKE_TIME) refuses to answer rather than sign with it: /healthz
  503 naming the expired signer, every request tryLater, nothing signed.
- `crl publish` (the timer's command) renews it, for the same HSM key, with
  an audit record; the running responder notices the new certificate in
  the store within about a second and answers again, signed under the
  new certificate.
- `crl publish --watch` renews it too, once it is in the second half of its
  life, and says so.
"""
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (OCSPD, Responder, check, enrol, fail, free_port, make_request,  # noqa: E402
                      ocsp, statuses, stop_child, verify_response, x509)
from scfixture import SMARTCERT, Deployment  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402

DAY = 86400
NOCHECK = x509.ObjectIdentifier("1.3.6.1.5.5.7.48.1.5")


def signer_of(d):
    with open(d.info["ocsp_cert"], "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def utc(dt):
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def spki(cert):
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def healthz(url):
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post(url, body):
    req = urllib.request.Request(url + "/ocsp", data=body, method="POST",
                                 headers={"Content-Type": "application/ocsp-request"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


with Deployment() as d:
    serial, _, _ = enrol(d, "sam")
    req = make_request(d, [serial])
    s1 = signer_of(d)
    life = utc(s1.not_valid_after) - utc(s1.not_valid_before)
    check(4 * DAY <= life <= 4 * DAY + 600 and
          s1.extensions.get_extension_for_oid(NOCHECK) is not None,
          f"the OCSP signer lives {life / DAY:.2f} days, with id-pkix-ocsp-nocheck")
    with Responder(d) as r:
        resp = verify_response(d, r.post(req))
        check(statuses(resp)[0][1] == ocsp.OCSPCertStatus.GOOD and
              utc(resp.next_update) <= utc(s1.not_valid_after),
              "answered good; nextUpdate within the signer's life")
    out = d.sc_json("ca", "ocsp-signer")
    check(not out["renewed"], f"ca ocsp-signer: not due yet ({out})")

    # five days on: the signer has expired and nothing renewed it yet
    t5 = int(time.time()) + 5 * DAY
    env5 = dict(d.env, SMARTCERT_FAKE_TIME=str(t5))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = os.path.join(d.tmp, "ocspd-expired.log")
    with open(log_path, "ab") as log:
        p = subprocess.Popen([OCSPD, "--config", d.config, "--foreground", "--listen",
                              f"127.0.0.1:{port}"], env=env5, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        code = None
        while time.monotonic() < deadline and p.poll() is None:
            try:
                code, body = healthz(url)
                # "503 starting" comes before the responder has looked at
                # its signer (slow under the sanitizers): ask again
                if not body.strip().startswith("starting"):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        check(code == 503 and "expired" in body,
              f"expired signer: /healthz 503 ({code} {body.strip() if code else ''})")
        st = ocsp.load_der_ocsp_response(post(url, req)).response_status
        check(st == ocsp.OCSPResponseStatus.TRY_LATER,
              f"expired signer: the request is answered tryLater, nothing signed ({st})")
        # the timer's command renews it (same clock)
        r = d.sc("crl", "publish", env=env5)
        check("OCSP signer renewed" in r.stdout, f"crl publish renewed the signer: "
              f"{r.stdout.strip().splitlines()[0]}")
        s2 = signer_of(d)
        check(s2.serial_number != s1.serial_number and
              spki(s2) == spki(s1), "a new certificate for the same HSM key")
        check(abs(utc(s2.not_valid_after) - (t5 + 4 * DAY)) < 5,
              "valid 4 days from the renewal")
        audit = d.sc_json("audit", "show", "--kind", "ocsp-signer-renew")
        recs = audit if isinstance(audit, list) else audit.get("records", [])
        check(len(recs) == 1, f"one audit record ocsp-signer-renew ({recs})")
        # the running responder follows the store
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and healthz(url)[0] != 200:
            time.sleep(0.1)
        check(healthz(url)[0] == 200, "the running responder took the new signer (healthz 200)")
        resp = ocsp.load_der_ocsp_response(post(url, req))
        check(resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL and
              resp.certificates[0].serial_number == s2.serial_number and
              statuses(verify_response(d, post(url, req)))[0][1] == ocsp.OCSPCertStatus.GOOD,
              "and answers again, signed under the new certificate")
        with open(log_path) as f:
            text = f.read()
        check("ocspd.signer_expired" in text and "ocspd.signer_changed" in text,
              "its log says the signer had expired, then changed")
    finally:
        stop_child(p)
    check(p.returncode == 0, f"responder stopped cleanly ({p.returncode})")

    # three days later the new one is in the second half of its life:
    # --watch renews it
    t8 = t5 + 3 * DAY
    w = subprocess.Popen([SMARTCERT, "crl", "publish", "--watch", "--poll", "1", "--json"],
                         env=dict(d.env, SMARTCERT_FAKE_TIME=str(t8)), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    got = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and got is None:
            line = w.stdout.readline()
            if not line:
                break
            ev = json.loads(line)
            if ev.get("event") == "ocsp-signer-renewed":
                got = ev
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(timeout=20)
    s3 = signer_of(d)
    check(got is not None and s3.serial_number != s2.serial_number and
          abs(utc(s3.not_valid_after) - (t8 + 4 * DAY)) < 5,
          f"crl publish --watch renewed it in the second half of its life ({got})")
    if w.returncode != 0:
        fail(f"the watcher exited {w.returncode}")
print("all OCSP signer checks passed")
