#!/usr/bin/env python3
"""What relying parties see in the answers, judged by independent clients.

- invalidityDate: a certificate revoked with an invalidity date is answered
  with the same date (singleExtension id-ce-invalidityDate, as the CRL
  entry carries it) and the same reason as the CRL, by python-cryptography,
  `openssl ocsp -resp_text` and the CRL itself.
- conditional GET: If-Modified-Since never gets 304 for an answer whose
  status changed since the client's copy, even within one second (hold,
  resume and hold again in a row); a date in the future is ignored; an
  unchanged answer still gets 304, by ETag and by date.
- HTTP edge cases: the nonce value (the inner OCTET STRING) may be 1 to 128
  octets: 0 and 129 are malformedRequest, 1 and 128 are echoed; two
  conflicting Content-Length headers get 400; PUT and DELETE with a body
  get a 405 response naming the allowed methods.
- cache lifetime: Cache-Control max-age (and Expires) is min(ocsp.max_age,
  nextUpdate - now): 60 s by default, 0 when set to 0, nextUpdate when set
  beyond it.
"""
import datetime
import email.utils
import os
import time
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (Responder, make_request, verify_response, statuses, check,  # noqa: E402
                      ocsp, x509, enrol, set_ocsp_option)
from ocsptest import ca_certs, cert_id, raw_http as raw_http_strict  # noqa: E402
from scfixture import Deployment, skip_unless, tlv  # noqa: E402

skip_unless("openssl")


def raw_http(port, data):
    """The responder may reset a connection it refuses: that ends the read."""
    return raw_http_strict(port, data, reset_ok=True)
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


def http_date(t):
    return email.utils.formatdate(t, usegmt=True)


def conditional_checks(d, r):
    serial, hexs, _ = enrol(d, "kate")
    req = make_request(d, [serial])
    # signing ahead and the first request may each sign an answer: wait
    # until the stored one stays put
    prev = None
    for _ in range(100):
        code, hdr, body = r.get_full(req)
        if prev is not None and hdr.get("ETag") == prev:
            break
        prev = hdr.get("ETag")
        time.sleep(0.05)
    check(code == 200 and "Last-Modified" in hdr and "ETag" in hdr,
          "a settled answer carries Last-Modified and ETag")
    lm = hdr["Last-Modified"]
    check(r.get_full(req, {"If-Modified-Since": lm})[0] == 304 and
          r.get_full(req, {"If-None-Match": hdr["ETag"]})[0] == 304,
          "unchanged: 304 by If-Modified-Since and by If-None-Match")
    future = http_date(time.time() + 86400)
    code, _, body = r.get_full(req, {"If-Modified-Since": future})
    check(code == 200 and statuses(verify_response(d, body))[0][1] == ocsp.OCSPCertStatus.GOOD,
          "If-Modified-Since in the future is ignored: 200 with the answer")
    for i in range(3):
        # status changes in quick succession, typically within one second
        d.sc("ca", "suspend", "--user", "kate")
        d.sc("ca", "resume", "--user", "kate")
        code, hdr, body = r.get_full(req)
        check(code == 200 and statuses(verify_response(d, body))[0][1] == ocsp.OCSPCertStatus.GOOD,
              f"round {i}: good after resume")
        tu = ocsp.load_der_ocsp_response(body).this_update.replace(
            tzinfo=datetime.timezone.utc).timestamp()
        ims = hdr.get("Last-Modified", http_date(tu))
        t_change = int(time.time())      # the suspension is at or after this second
        d.sc("ca", "suspend", "--user", "kate")
        for what, value in (("the client's copy's date", ims),
                            ("the second of the change", http_date(t_change))):
            code, hdr2, body2 = r.get_full(req, {"If-Modified-Since": value})
            check(code == 200 and statuses(verify_response(d, body2))[0][1] ==
                  ocsp.OCSPCertStatus.REVOKED,
                  f"round {i}: held since; If-Modified-Since {what} gets 200 revoked, not 304")
            check(hdr2.get("Last-Modified") != ims or "Last-Modified" not in hdr2,
                  f"round {i}: the changed answer does not repeat the old Last-Modified")
        code, _, _ = r.get_full(req, {"If-None-Match": hdr.get("ETag", "")})
        check(code == 200, f"round {i}: the old ETag gets 200")
        d.sc("ca", "resume", "--user", "kate")
    # the daemon re-signs a change from the second after it: within about a
    # second the answer carries a Last-Modified of its own again
    deadline = time.monotonic() + 5
    hdr = {}
    while time.monotonic() < deadline and "Last-Modified" not in hdr:
        time.sleep(0.2)
        code, hdr, body = r.get_full(req)
    lm2 = hdr.get("Last-Modified")
    check(lm2 is not None and email.utils.parsedate_to_datetime(lm2) >
          email.utils.parsedate_to_datetime(lm) and
          statuses(verify_response(d, body))[0][1] == ocsp.OCSPCertStatus.GOOD,
          f"after the changes the re-signed answer has a later Last-Modified ({lm2})")
    check(r.get_full(req, {"If-Modified-Since": lm2})[0] == 304,
          "and If-Modified-Since with it gets 304 again")


NONCE_OID = bytes.fromhex("06092b0601050507300102")


def request_with_nonce_value(d, serial, inner):
    """A request whose nonce extnValue holds exactly `inner` (already DER)."""
    reqs = tlv(0x30, cert_id(ca_certs(d)[0], serial))
    ext = tlv(0x30, NONCE_OID + tlv(0x04, inner))
    return tlv(0x30, tlv(0x30, tlv(0x30, reqs) + tlv(0xA2, tlv(0x30, ext))))


def http_checks(d, r):
    serial, _, _ = enrol(d, "leo")
    for n, ok in ((0, False), (1, True), (16, True), (32, True), (128, True), (129, False)):
        value = os.urandom(n)
        der = r.post(request_with_nonce_value(d, serial, tlv(0x04, value)))
        resp = ocsp.load_der_ocsp_response(der)
        if ok:
            verify_response(d, der)
            got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            check(resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL and got == value,
                  f"nonce of {n} octets: echoed")
        else:
            check(resp.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
                  f"nonce of {n} octets: malformedRequest")
    der = r.post(request_with_nonce_value(d, serial, b"\x01" + os.urandom(15)))
    check(ocsp.load_der_ocsp_response(der).response_status ==
          ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
          "a nonce extnValue that is not an OCTET STRING: malformedRequest")
    body = make_request(d, [serial])
    out = raw_http(r.port, b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   b"application/ocsp-request\r\nContent-Length: %d\r\nContent-Length: %d\r\n"
                   b"\r\n" % (len(body), len(body) + 5) + body + b"\0" * 5)
    check(out.startswith(b"HTTP/1.1 400"), "two conflicting Content-Length headers: 400")
    out = raw_http(r.port, b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   b"application/ocsp-request\r\nContent-Length: %d, %d\r\n"
                   b"\r\n" % (len(body), len(body)) + body)
    check(out.startswith(b"HTTP/1.1 400"), "a Content-Length list: 400")
    out = raw_http(r.port, b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   b"application/ocsp-request\r\nContent-Length: %d\r\nConnection: close\r\n"
                   b"\r\n" % len(body) + body)
    check(out.startswith(b"HTTP/1.1 200"), "a single Content-Length: 200")
    for m in (b"PUT", b"DELETE", b"PATCH"):
        out = raw_http(r.port, m + b" /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/ocsp-request\r\nContent-Length: %d\r\n\r\n" % len(body)
                       + body)
        head = out.split(b"\r\n\r\n")[0].lower()
        check(out.startswith(b"HTTP/1.1 405") and b"allow: get, head, post" in head,
              f"{m.decode()} with a body: 405 with Allow")
    code, _, _ = r.get_full(make_request(d, [serial]))
    check(code == 200, "the responder still answers")


def max_age_of(r, req):
    code, hdr, _ = r.get_full(req)
    cc = hdr["Cache-Control"]
    age = int(cc.split("max-age=")[1].split(",")[0])
    exp = email.utils.parsedate_to_datetime(hdr["Expires"]).timestamp()
    date = email.utils.parsedate_to_datetime(hdr["Date"]).timestamp()
    return code, age, exp - date


def max_age_checks(d):
    serial, _, _ = enrol(d, "otto")
    req = make_request(d, [serial])
    with Responder(d) as r:
        code, age, exp = max_age_of(r, req)
        check(code == 200 and 0 < age <= 60 and abs(exp - age) <= 1,
              f"default: max-age {age} <= 60 s, Expires = Date + max-age")
    set_ocsp_option(d, "max_age", "0")
    with Responder(d) as r:
        code, age, exp = max_age_of(r, req)
        check(code == 200 and age == 0 and abs(exp) <= 1, "ocsp.max_age = 0: max-age=0")
    set_ocsp_option(d, "max_age", "31622400")
    with Responder(d) as r:
        code, age, exp = max_age_of(r, req)
        check(code == 200 and 86400 - 120 <= age <= 86400 and abs(exp - age) <= 1,
              f"ocsp.max_age past nextUpdate: max-age {age} = nextUpdate - now")
    set_ocsp_option(d, "max_age", "-1")
    proc = subprocess.run([os.environ.get("SMARTCERT_OCSPD_BIN", "smartcert-ocspd"), "--config",
                           d.config, "--foreground", "--listen", "127.0.0.1:0"],
                          env=d.env, capture_output=True, text=True, timeout=60)
    check(proc.returncode == 6 and "ocsp.max_age" in proc.stderr,
          f"ocsp.max_age = -1 refused at start, exit 6: {proc.stderr.strip()[-120:]}")
    set_ocsp_option(d, "max_age", "60")


with Deployment() as d:
    max_age_checks(d)
    with Responder(d) as r:
        http_checks(d, r)
        invalidity_checks(d, r)
        conditional_checks(d, r)
print("all relying-party checks passed")
