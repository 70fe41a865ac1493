#!/usr/bin/env python3
"""smartcert-ocspd against real clients: openssl ocsp, GnuTLS ocsptool and
python3-cryptography parse and verify good / revoked / unknown answers over
POST and GET, sha1 and sha256 CertIDs, nonce echo, several CertIDs in one
request, the delegated signer (included, ocsp-nocheck, responder ID by key
hash), RFC 5019 caching headers and 304s, /ca/ and /crl/, /metrics counts,
JSON request logs, and reload on SIGHUP (unknown_policy = revoked,
nonce = ignore; a bad configuration is refused and the old one kept)."""
import base64
import datetime
import email.utils
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (Responder, make_request, verify_response, statuses, check, fail,  # noqa: E402
                      ocsp, x509, enrol, set_ocsp_option, ca_certs, tlv)
from scfixture import Deployment, skip_unless  # noqa: E402

skip_unless("openssl", "ocsptool")

GOOD = ocsp.OCSPCertStatus.GOOD
REVOKED = ocsp.OCSPCertStatus.REVOKED
UNKNOWN = ocsp.OCSPCertStatus.UNKNOWN


def openssl_ocsp(d, r, *args):
    p = subprocess.run(["openssl", "ocsp", "-url", r.url + "/ocsp",
                        "-issuer", d.info["issuing_ca"], "-CAfile", d.info["chain"], *args],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


with Deployment() as d:
    a_serial, a_hex, a_pem = enrol(d, "alice")
    b_serial, b_hex, b_pem = enrol(d, "bob")
    d.sc("ca", "revoke", "--serial", b_hex, "--reason", "keyCompromise")
    c_serial, c_hex, c_pem = enrol(d, "carl")
    d.sc("ca", "revoke", "--serial", c_hex, "--reason", "unspecified")
    unknown_serial = 0x1234567890ABCDEF

    # every request logged: the log checks below must not meet the rate limit
    with Responder(d, "--log-rate", "1000000") as r:
        # --- openssl ocsp (POST), with and without nonce, sha1 and sha256
        for extra in ([], ["-no_nonce"], ["-sha256"], ["-sha256", "-no_nonce"]):
            digest = [e for e in extra if e == "-sha256"]
            rest = [e for e in extra if e != "-sha256"]
            rc, out = openssl_ocsp(d, r, *digest, "-cert", a_pem, *rest)
            check(rc == 0 and "Response verify OK" in out and f"{a_pem}: good" in out,
                  f"openssl ocsp {' '.join(extra)}: alice good and verified")
            rc, out = openssl_ocsp(d, r, *digest, "-cert", b_pem, *rest)
            check(rc == 0 and "Response verify OK" in out and ": revoked" in out
                  and "Reason: keyCompromise" in out,
                  f"openssl ocsp {' '.join(extra)}: bob revoked keyCompromise")
        rc, out = openssl_ocsp(d, r, "-serial", hex(unknown_serial))
        check(rc == 0 and "Response verify OK" in out and ": unknown" in out,
              "openssl ocsp: never-issued serial unknown")
        rc, out = openssl_ocsp(d, r, "-cert", a_pem, "-cert", b_pem, "-serial", "0x99")
        check(rc == 0 and "Response verify OK" in out and f"{a_pem}: good" in out
              and f"{b_pem}: revoked" in out and "0x99: unknown" in out,
              "openssl ocsp: three certificates in one request")
        # the issuing CA itself is not answered by its own responder
        p = subprocess.run(["openssl", "ocsp", "-url", r.url + "/ocsp", "-issuer",
                            d.info["root_ca"], "-cert", d.info["issuing_ca"],
                            "-CAfile", d.info["chain"]], capture_output=True, text=True,
                           timeout=60)
        check("unauthorized" in p.stdout + p.stderr, "foreign issuer: unauthorized")

        # --- GnuTLS ocsptool
        for pem, want in ((a_pem, "good"), (b_pem, "revoked")):
            p = subprocess.run(["ocsptool", "--ask=" + r.url + "/ocsp", "--load-issuer",
                                d.info["issuing_ca"], "--load-cert", pem,
                                "--load-signer", d.info["ocsp_cert"], "--nonce"],
                               capture_output=True, text=True, timeout=60)
            out = p.stdout + p.stderr
            check(re.search(r"Certificate Status:\s*" + want, out, re.I)
                  and "Verifying OCSP Response: Success" in out,
                  f"ocsptool --ask: {want}, response verified")
        # ocsptool -j on a saved response
        resp_file = os.path.join(d.tmp, "resp.der")
        with open(resp_file, "wb") as f:
            f.write(r.post(make_request(d, [a_serial])))
        p = subprocess.run(["ocsptool", "-j", "--infile", resp_file], capture_output=True,
                           text=True, timeout=60)
        check(p.returncode == 0 and re.search(r"Certificate Status:\s*good", p.stdout, re.I),
              "ocsptool -j parses the response")
        p = subprocess.run(["ocsptool", "-e", "--load-signer", d.info["ocsp_cert"],
                            "--infile", resp_file], capture_output=True, text=True,
                           timeout=60)
        check(p.returncode == 0 and "Success" in p.stdout + p.stderr,
              "ocsptool -e verifies the response with the signer certificate")

        # --- GET answers verified by openssl and ocsptool too (the
        # clients above ask by POST; RFC 5019 relying parties use GET)
        for pem, serial, want in ((a_pem, a_serial, "good"), (b_pem, b_serial, "revoked"),
                                  (None, unknown_serial, "unknown")):
            for alg in ("sha1", "sha256"):
                get_file = os.path.join(d.tmp, f"get-{want}-{alg}.der")
                with open(get_file, "wb") as f:
                    f.write(r.get(make_request(d, [serial], alg)))
                what = ["-cert", pem] if pem else ["-serial", hex(serial)]
                p = subprocess.run(["openssl", "ocsp", "-respin", get_file, "-issuer",
                                    d.info["issuing_ca"], "-CAfile", d.info["chain"],
                                    *(["-" + alg] if alg != "sha1" else []), *what],
                                   capture_output=True, text=True, timeout=60)
                out = p.stdout + p.stderr
                check(p.returncode == 0 and "Response verify OK" in out and f": {want}" in out,
                      f"openssl ocsp -respin (GET {alg}): {want}, verified")
                p = subprocess.run(["ocsptool", "-e", "--load-signer", d.info["ocsp_cert"],
                                    "--infile", get_file], capture_output=True, text=True,
                                   timeout=60)
                out = p.stdout + p.stderr
                check(p.returncode == 0 and "Verifying OCSP Response: Success" in out
                      and re.search(r"Certificate Status:\s*" + want, out, re.I),
                      f"ocsptool -e (GET {alg}): {want}, verified")

        # --- the delegated signer: included, id-pkix-ocsp-nocheck, OCSPSigning,
        # issued by the CA it answers for; responder ID byKey
        signer = ca_certs(d)[1]
        check(any(e.oid.dotted_string == "1.3.6.1.5.5.7.48.1.5" for e in signer.extensions),
              "signer certificate carries id-pkix-ocsp-nocheck")
        check(x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING in signer.extensions
              .get_extension_for_class(x509.ExtendedKeyUsage).value,
              "signer certificate has extendedKeyUsage OCSPSigning")
        resp = verify_response(d, r.get(make_request(d, [a_serial])))
        check(resp.responder_name is None and resp.responder_key_hash is not None
              and resp.certificates == [signer], "responder ID byKey, signer certificate included")

        # --- an issuer this responder does not serve, by GET too
        root = ca_certs(d)[2]
        for method in ("POST", "GET"):
            req = make_request(root, [a_serial])
            der = r.post(req) if method == "POST" else r.get(req)
            check(ocsp.load_der_ocsp_response(der).response_status
                  == ocsp.OCSPResponseStatus.UNAUTHORIZED, f"{method} foreign issuer: unauthorized")

        # --- python3-cryptography: POST and GET, sha1 and sha256
        for alg in ("sha1", "sha256"):
            for method in ("POST", "GET"):
                req = make_request(d, [a_serial], alg)
                der = r.post(req) if method == "POST" else r.get(req)
                resp = verify_response(d, der)
                check(statuses(resp) == [(a_serial, GOOD, None)]
                      and resp.hash_algorithm.name == alg,
                      f"cryptography: {method} {alg} good, signature verified, same hash")
                der = r.post(make_request(d, [b_serial], alg)) if method == "POST" \
                    else r.get(make_request(d, [b_serial], alg))
                resp = verify_response(d, der)
                st = statuses(resp)[0]
                check(st[1] == REVOKED and st[2] == x509.ReasonFlags.key_compromise
                      and resp.revocation_time is not None,
                      f"cryptography: {method} {alg} revoked with reason and time")
        resp = verify_response(d, r.post(make_request(d, [unknown_serial])))
        check(statuses(resp)[0][1] == UNKNOWN, "cryptography: unknown serial")
        for alg in ("sha1", "sha256"):
            req = make_request(d, [a_serial], alg, null_params=False)
            resp = verify_response(d, r.get(req))
            check(statuses(resp) == [(a_serial, GOOD, None)] and req.find(
                next(iter(resp.responses)).issuer_key_hash) > 0,
                f"CertID with {alg} and absent parameters (RFC 5754) answered good")
        resp = verify_response(d, r.get(make_request(d, [c_serial])))
        check(statuses(resp) == [(c_serial, REVOKED, None)] and resp.revocation_time,
              "revoked with reason unspecified: revoked, the reason omitted (RFC 5280 5.3.1)")
        now = datetime.datetime.utcnow()
        check(resp.this_update <= now + datetime.timedelta(seconds=5)
              and resp.next_update - resp.this_update == datetime.timedelta(seconds=86400),
              "thisUpdate now, nextUpdate = thisUpdate + ocsp.validity_seconds")

        # --- nonce echoed
        nonce = os.urandom(16)
        resp = verify_response(d, r.post(make_request(d, [a_serial], nonce=nonce)))
        got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        check(got == nonce, "nonce echoed")

        # --- several certificates
        resp = verify_response(d, r.post(make_request(d, [a_serial, b_serial, 77], "sha256")))
        check([s[1] for s in statuses(resp)] == [GOOD, REVOKED, UNKNOWN],
              "one request, three SingleResponses in order")

        # --- CertHash extension (id-commonpki-at-certHash) = SHA-256 of the cert
        resp = verify_response(d, r.post(make_request(d, [a_serial])))
        with open(a_pem, "rb") as f:
            a_der = x509.load_pem_x509_certificate(f.read()).public_bytes(
                __import__("cryptography.hazmat.primitives.serialization",
                           fromlist=["Encoding"]).Encoding.DER)
        ext = [e for e in resp.single_extensions
               if e.oid.dotted_string == "1.3.36.8.3.13"]
        check(ext and hashlib.sha256(a_der).digest() in ext[0].value.value,
              "CertHash extension carries SHA-256 of the certificate")

        # --- HTTP/1.1 keep-alive: GETs and a POST on one connection
        conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=30)
        b64 = urllib.parse.quote(base64.b64encode(make_request(d, [a_serial])).decode(), safe="")
        socks, codes = [], []
        for method in ("GET", "GET", "POST", "GET"):
            if method == "GET":
                conn.request("GET", "/ocsp/" + b64)
            else:
                conn.request("POST", "/ocsp", body=make_request(d, [b_serial]),
                             headers={"Content-Type": "application/ocsp-request"})
            resp = conn.getresponse()
            codes.append((resp.status, statuses(verify_response(d, resp.read()))[0][1]))
            socks.append(conn.sock)   # held: a new connection is a new object
        conn.close()
        check(codes == [(200, GOOD), (200, GOOD), (200, REVOKED), (200, GOOD)] and all(sk is socks[0] is not None for sk in socks),
              "four requests answered on one kept-alive connection")

        # --- RFC 5019 GET caching headers and 304
        req = make_request(d, [a_serial])
        status, hdr, body = r.get_full(req)
        cc = hdr.get("Cache-Control", "")
        m = re.search(r"max-age=(\d+)", cc)
        check(status == 200 and m and 0 < int(m.group(1)) <= 60 and "public" in cc
              and "no-transform" in cc and "must-revalidate" in cc,
              f"GET Cache-Control: {cc} (ocsp.max_age 60 by default)")
        resp = ocsp.load_der_ocsp_response(body)
        lm = hdr.get("Last-Modified")
        exp = email.utils.parsedate_to_datetime(hdr.get("Expires"))
        date = email.utils.parsedate_to_datetime(hdr.get("Date"))
        check(lm == resp.this_update.strftime("%a, %d %b %Y %H:%M:%S GMT")
              and abs((exp - date).total_seconds() - int(m.group(1))) <= 1
              and exp.replace(tzinfo=None) <= resp.next_update,
              "Last-Modified = thisUpdate, Expires = Date + max-age, before nextUpdate")
        etag = hdr.get("ETag")
        check(etag and etag.startswith('"'), f"ETag {etag}")
        status, _, body = r.get_full(req, headers={"If-None-Match": etag})
        check(status == 304 and body == b"", "If-None-Match: 304")
        status, _, _ = r.get_full(req, headers={"If-Modified-Since": lm})
        check(status == 304, "If-Modified-Since: 304")
        status, _, _ = r.get_full(req, headers={"If-None-Match": '"other"'})
        check(status == 200, "non-matching If-None-Match: 200")

        # --- '/' and '+' in the base64 survive raw and percent-encoded
        found = None
        for s in range(1, 200000):
            req = make_request(d, [s])
            b64 = base64.b64encode(req).decode()
            if "/" in b64 and "+" in b64:
                found = (s, req, b64)
                break
        check(found is not None, "found a request whose base64 holds '/' and '+'")
        s, req, b64 = found
        for path in (b64, urllib.parse.quote(b64, safe=""), urllib.parse.quote(b64, safe="/+=")):
            resp = verify_response(d, r.get(None, raw_path=path))
            check(statuses(resp)[0][0] == s, f"GET path form {path[:24]}... decodes")

        # --- /ca/ and /crl/
        with urllib.request.urlopen(r.url + "/ca/issuing-ca.crt", timeout=10) as u:
            body = u.read()
            ctype = u.headers.get("Content-Type")
        check(body == ca_certs(d)[0].public_bytes(
            __import__("cryptography.hazmat.primitives.serialization",
                       fromlist=["Encoding"]).Encoding.DER)
              and ctype == "application/pkix-cert", "/ca/issuing-ca.crt is the DER")
        # the CRLs `smartcert crl publish` wrote, served as published: the
        # full CRL lists bob and verifies under the issuing CA
        d.sc("crl", "publish")
        crl_dir = os.path.join(d.dir, "crl")
        with urllib.request.urlopen(r.url + "/crl/full.crl", timeout=10) as u:
            body, ctype = u.read(), u.headers.get("Content-Type")
        with open(os.path.join(crl_dir, "full.crl"), "rb") as f:
            check(body == f.read() and ctype == "application/pkix-crl",
                  "/crl/full.crl is the published file")
        crl = x509.load_der_x509_crl(body)
        check(crl.is_signature_valid(ca_certs(d)[0].public_key())
              and crl.get_revoked_certificate_by_serial_number(b_serial) is not None,
              "the served CRL verifies and lists the revoked certificate")
        try:
            urllib.request.urlopen(r.url + "/crl/..%2Fsmartcert.conf", timeout=10)
            fail("path traversal under /crl/ served a file")
        except urllib.error.HTTPError as e:
            check(e.code == 404, "no path traversal under /crl/")

        # --- metrics: counters move by exactly what was asked
        def scrape():
            out = {}
            for line in r.metrics().splitlines():
                if line and not line.startswith("#"):
                    k, v = line.rsplit(" ", 1)
                    out[k] = float(v)
            return out
        m0 = scrape()
        r.get(make_request(d, [a_serial]))
        r.post(make_request(d, [b_serial]))
        r.post(make_request(d, [unknown_serial]))
        r.post(b"junk")
        status, _, _ = r.get_full(make_request(d, [a_serial]), headers={"If-None-Match": "*"})
        m1 = scrape()

        def delta(k):
            return m1.get(k, 0) - m0.get(k, 0)
        res = 'smartcert_ocsp_requests_total{result="%s"}'
        check(status == 304 and delta(res % "good") == 1 and delta(res % "revoked") == 1
              and delta(res % "unknown") == 1 and delta(res % "malformedRequest") == 1
              and delta(res % "not_modified") == 1,
              "/metrics: requests by result count each answer once")
        check(delta("smartcert_ocsp_request_duration_seconds_count") == 5
              and m1['smartcert_ocsp_request_duration_seconds_bucket{le="+Inf"}']
              == m1["smartcert_ocsp_request_duration_seconds_count"]
              and m1["smartcert_ocsp_request_duration_seconds_sum"] > 0,
              "/metrics: latency histogram counts every request")
        check(delta("smartcert_ocsp_response_age_seconds_count") >= 4
              and "smartcert_ocsp_response_age_seconds_sum" in m1,
              "/metrics: age of the responses served")

        # --- structured logs: one JSON object a line
        events = []
        for line in r.log_text().splitlines()[1:]:
            try:
                events.append(json.loads(line))
            except ValueError:
                fail(f"log line is not JSON: {line[:120]}")
        reqs = [e for e in events if e.get("event") == "ocsp.request"]
        check(any(e["method"] == "GET" and e.get("cert") == "good" and e["http"] == 200
                  and e.get("serial") == a_hex.lower() for e in reqs)
              and any(e.get("ocsp") == "malformedRequest" for e in reqs)
              and all(isinstance(e.get("us"), int) and e.get("peer") == "127.0.0.1"
                      for e in reqs),
              f"JSON request log lines ({len(reqs)}) with method, result, serial, latency")

        # --- SIGHUP with a bad setting: refused, the old settings keep serving
        with open(d.config) as f:
            saved_config = f.read()
        set_ocsp_option(d, "nonce", "sometimes")
        r.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "ocspd.reload_failed" not in r.log_text():
            time.sleep(0.05)
        check("ocspd.reload_failed" in r.log_text() and "ocsp.nonce" in r.log_text(),
              "SIGHUP with ocsp.nonce = sometimes: reload refused, the key named")
        resp = verify_response(d, r.post(make_request(d, [a_serial], nonce=b"n" * 16)))
        check(resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16,
              "old settings still serve after the refused reload")
        with open(d.config, "w") as f:
            f.write(saved_config)

        # --- SIGHUP reload: unknown_policy = revoked, nonce = ignore
        set_ocsp_option(d, "unknown_policy", "revoked")
        set_ocsp_option(d, "nonce", "ignore")
        r.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "ocspd.reloaded" not in r.log_text():
            time.sleep(0.05)
        check("ocspd.reloaded" in r.log_text(), "SIGHUP reloaded")
        resp = verify_response(d, r.post(make_request(d, [unknown_serial])))
        st = statuses(resp)[0]
        check(st[1] == REVOKED and st[2] == x509.ReasonFlags.certificate_hold
              and resp.revocation_time == datetime.datetime(1970, 1, 1)
              and any(e.oid.dotted_string == "1.3.6.1.5.5.7.48.1.9" for e in resp.extensions),
              "unknown_policy=revoked: certificateHold, 1970-01-01, extended-revoke")
        rc, out = openssl_ocsp(d, r, "-serial", hex(unknown_serial))
        check("Response verify OK" in out and ": revoked" in out,
              "openssl accepts the RFC 6960 §2.2 answer")
        resp = verify_response(d, r.post(make_request(d, [a_serial], nonce=os.urandom(16))))
        check(not any(isinstance(e.value, x509.OCSPNonce) for e in resp.extensions),
              "nonce=ignore: nonce not echoed (pre-signed answer)")
        check(r.stop() == 0, "SIGTERM: clean exit 0")
print("all ocsp client checks passed")
