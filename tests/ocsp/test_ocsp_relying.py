#!/usr/bin/env python3
"""What relying parties see in the answers, judged by independent clients.

- invalidityDate: a certificate revoked with an invalidity date is answered
  with the same date (singleExtension id-ce-invalidityDate, as the CRL
  entry carries it) and the same reason as the CRL, by python-cryptography,
  `openssl ocsp -resp_text` and the CRL itself.
"""
import datetime
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (Responder, make_request, verify_response, statuses, check,  # noqa: E402
                      fail, ocsp, x509, enrol)
from scfixture import Deployment, skip_unless  # noqa: E402

skip_unless("openssl")
INV_OID = x509.oid.CRLEntryExtensionOID.INVALIDITY_DATE


def single_invalidity(der):
    """The invalidityDate singleExtension of the first SingleResponse."""
    for e in ocsp.load_der_ocsp_response(der).single_extensions:
        if e.oid == INV_OID:
            return e
    return None


def invalidity_checks(d, r):
    a_serial, a_hex, a_pem = enrol(d, "ivan")
    b_serial, b_hex, _ = enrol(d, "judy")
    d.sc("ca", "revoke", "--serial", a_hex, "--reason", "keyCompromise",
         "--invalidity-date", "2026-01-02T03:04:05Z")
    d.sc("ca", "revoke", "--serial", b_hex, "--reason", "superseded")
    d.sc("crl", "publish")
    crl = x509.load_der_x509_crl(open(os.path.join(d.dir, "crl", "full.crl"), "rb").read())
    entry = crl.get_revoked_certificate_by_serial_number(a_serial)
    crl_inv = entry.extensions.get_extension_for_oid(INV_OID)
    for how, der in (("POST", r.post(make_request(d, [a_serial]))),
                     ("GET", r.get(make_request(d, [a_serial]))),
                     ("POST sha256", r.post(make_request(d, [a_serial], "sha256")))):
        resp = verify_response(d, der)
        st = statuses(resp)[0]
        e = single_invalidity(der)
        check(st[1] == ocsp.OCSPCertStatus.REVOKED and
              st[2] == entry.extensions.get_extension_for_class(x509.CRLReason).value.reason,
              f"{how}: revoked keyCompromise, as on the CRL")
        check(e is not None and not e.critical and
              e.value.invalidity_date == crl_inv.value.invalidity_date ==
              datetime.datetime(2026, 1, 2, 3, 4, 5),
              f"{how}: invalidityDate 2026-01-02T03:04:05Z, non-critical, as on the CRL")
    # a revocation without an invalidity date carries none (nor does the CRL)
    der = r.post(make_request(d, [b_serial]))
    b_entry = crl.get_revoked_certificate_by_serial_number(b_serial)
    check(single_invalidity(der) is None and
          not any(e.oid == INV_OID for e in b_entry.extensions),
          "no invalidity date recorded: none in the answer, none on the CRL")
    # OpenSSL, an independent parser, prints it
    req = os.path.join(d.tmp, "inv.req")
    with open(req, "wb") as f:
        f.write(make_request(d, [a_serial]))
    out = subprocess.run(["openssl", "ocsp", "-reqin", req, "-url", r.url + "/ocsp",
                          "-issuer", d.info["issuing_ca"], "-CAfile", d.info["chain"],
                          "-resp_text", "-no_nonce"],
                         capture_output=True, text=True, timeout=30)
    check("Invalidity Date" in out.stdout and "Jan  2 03:04:05 2026 GMT" in out.stdout,
          "openssl ocsp -resp_text shows the Invalidity Date")


with Deployment() as d:
    with Responder(d) as r:
        invalidity_checks(d, r)
print("all relying-party checks passed")
