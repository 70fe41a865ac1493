"""Helpers for the OCSP responder tests: a running smartcert-ocspd on its own
free port of 127.0.0.1, hand-built OCSP requests (DER), response checks
with python3-cryptography.

    from ocsptest import Responder, make_request, parse
    with Deployment() as d, Responder(d) as r:
        der = r.post(make_request(d, [serial]))
"""
import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB",
                                  os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import check, fail, tlv  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402

OCSPD = os.environ.get("SMARTCERT_OCSPD_BIN", "smartcert-ocspd")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Responder:
    """smartcert-ocspd on a free port; readiness by polling /healthz."""

    def __init__(self, d, *extra, port=None, env=None):
        self.d = d
        self.extra = extra
        self.port = port
        self.env = env if env is not None else d.env
        self.proc = None
        self.rc = None
        self.log_path = os.path.join(d.tmp, "ocspd.log")

    def start(self):
        last = None
        fixed = self.port
        for _ in range(1 if fixed else 5):   # a probed port can be taken before bind
            port = fixed or free_port()
            self.log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [OCSPD, "--config", self.d.config, "--foreground",
                 "--listen", f"127.0.0.1:{port}", *self.extra],
                env=self.env, stdout=self.log, stderr=self.log)
            self.url = f"http://127.0.0.1:{port}"
            self.port = port
            try:
                self.wait_ready()
                return self
            except RuntimeError as e:
                last = e
                self.stop()
        fail(f"smartcert-ocspd did not start: {last}\n{self.log_text()}")

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError("no /healthz answer in time")

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.rc = self.proc.returncode
        self.proc = None
        if getattr(self, "log", None) is not None:
            self.log.close()      # a file system holding it can then be unmounted
            self.log = None
        return self.rc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        rc = self.stop()
        if exc[0] is None:
            # a sanitizer report or a crash at shutdown is a failure too
            if rc != 0:
                fail(f"smartcert-ocspd exited {rc} on SIGTERM\n{self.log_text()}")
            print("ok - smartcert-ocspd stopped cleanly on SIGTERM")
        return False

    # -- HTTP --------------------------------------------------------------
    def post(self, body, ctype="application/ocsp-request", expect=200):
        req = urllib.request.Request(self.url + "/ocsp", data=body, method="POST",
                                     headers={"Content-Type": ctype})
        return self._do(req, expect)

    def get(self, der, expect=200, headers=None, raw_path=None):
        path = raw_path if raw_path is not None else \
            urllib.parse.quote(base64.b64encode(der).decode(), safe="")
        req = urllib.request.Request(self.url + "/ocsp/" + path, headers=headers or {})
        return self._do(req, expect)

    def get_full(self, der, headers=None):
        path = urllib.parse.quote(base64.b64encode(der).decode(), safe="")
        req = urllib.request.Request(self.url + "/ocsp/" + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def _do(self, req, expect):
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        if expect is not None and status != expect:
            fail(f"{req.get_method()} {req.full_url[:80]}: HTTP {status}, expected {expect}")
        return body

    def metrics(self):
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            return r.read().decode()


# -- deployment facts --------------------------------------------------------

def load_pem(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def ca_certs(d):
    return (load_pem(d.info["issuing_ca"]), load_pem(d.info["ocsp_cert"]),
            load_pem(d.info["root_ca"]))


# -- DER building (requests are built by hand so tests control every byte) ---

def der_int(v):
    b = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    while len(b) > 1 and b[0] == 0 and b[1] < 0x80:
        b = b[1:]
    return tlv(0x02, b)


ALGIDS = {
    "sha1": bytes.fromhex("300906052b0e03021a0500"),
    "sha256": bytes.fromhex("300d06096086480165030402010500"),
}
NONCE_OID = bytes.fromhex("06092b0601050507300102")


def cert_id(issuer, serial, alg="sha1", null_params=True):
    name_der = issuer.subject.public_bytes()
    spki = issuer.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    key_bits = x509_spki_bits(spki)
    h = hashlib.new(alg)
    h.update(name_der)
    nh = h.digest()
    h = hashlib.new(alg)
    h.update(key_bits)
    kh = h.digest()
    algid = ALGIDS[alg] if null_params else tlv(0x30, ALGIDS[alg][2:-2])
    return tlv(0x30, algid + tlv(0x04, nh) + tlv(0x04, kh) + der_int(serial))


def x509_spki_bits(spki):
    """subjectPublicKey BIT STRING contents (without the unused-bits octet)."""
    def read(buf, off):
        tag = buf[off]
        ln = buf[off + 1]
        off += 2
        if ln & 0x80:
            n = ln & 0x7F
            ln = int.from_bytes(buf[off:off + n], "big")
            off += n
        return tag, off, ln
    _, off, _ = read(spki, 0)             # SEQUENCE
    _, off2, ln = read(spki, off)          # AlgorithmIdentifier
    tag, off3, ln3 = read(spki, off2 + ln)  # BIT STRING
    assert tag == 0x03
    return spki[off3 + 1:off3 + ln3]


def make_request(d_or_issuer, serials, alg="sha1", nonce=None, null_params=True):
    issuer = d_or_issuer if isinstance(d_or_issuer, x509.Certificate) else ca_certs(d_or_issuer)[0]
    reqs = b"".join(tlv(0x30, cert_id(issuer, s, alg, null_params)) for s in serials)
    tbs = tlv(0x30, tlv(0x30, reqs))
    if nonce is not None:
        ext = tlv(0x30, NONCE_OID + tlv(0x04, tlv(0x04, nonce)))
        tbs = tlv(0x30, tlv(0x30, reqs) + tlv(0xA2, tlv(0x30, ext)))
    return tlv(0x30, tbs)


# -- response checks --------------------------------------------------------

def verify_response(d, der):
    """Parse with cryptography, check the signature with the OCSP signer's
    key and that the signer certificate is included and issued by the CA."""
    issuer, signer, _ = ca_certs(d)
    r = ocsp.load_der_ocsp_response(der)
    if r.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return r
    certs = r.certificates
    if not certs or certs[0] != signer:
        fail("response does not include the OCSP signer certificate")
    if r.responder_key_hash != signer.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest and \
            r.responder_key_hash != hashlib.sha1(x509_spki_bits(signer.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo))).digest():
        fail("responder id is not the signer key hash")
    pub = signer.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        pub.verify(r.signature, r.tbs_response_bytes, ec.ECDSA(r.signature_hash_algorithm))
    elif isinstance(pub, rsa.RSAPublicKey):
        pub.verify(r.signature, r.tbs_response_bytes, padding.PKCS1v15(),
                   r.signature_hash_algorithm)
    # the signer certificate chains to the issuing CA
    ipub = issuer.public_key()
    if isinstance(ipub, ec.EllipticCurvePublicKey):
        ipub.verify(signer.signature, signer.tbs_certificate_bytes,
                    ec.ECDSA(signer.signature_hash_algorithm))
    return r


def statuses(r):
    return [(s.serial_number, s.certificate_status, s.revocation_reason)
            for s in r.responses]


def ocsp_status(der):
    return ocsp.load_der_ocsp_response(der).response_status


__all__ = ["Responder", "make_request", "verify_response", "statuses", "ocsp_status",
           "ca_certs", "cert_id", "tlv", "check", "fail", "free_port", "ocsp", "x509",
           "hashes"]


# -- CA operations through the real CLI ---------------------------------------

def enrol(d, user, name=None):
    """Enrol a user; returns (serial int, serial hex, path of the PEM)."""
    env = dict(d.env)
    env["SC_TEST_IDNUM"] = "A" + format(abs(hash(user)) % 10**6, "06d") + "(3)"
    r = subprocess.run([os.environ.get("SMARTCERT_BIN", "smartcert"), "ca", "enrol",
                        "--user", user, "--name", name or f"Test {user}",
                        "--id-number-source", "env:SC_TEST_IDNUM", "--json"],
                       env=env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        fail(f"ca enrol {user}: {r.stderr}")
    import json
    hexs = json.loads(r.stdout)["serial"]
    path = os.path.join(d.tmp, f"{user}.pem")
    d.sc("ca", "export", "--serial", hexs, "--out", path)
    return int(hexs, 16), hexs, path


def set_ocsp_option(d, key, value):
    """Append an [ocsp] setting (the last value of a key wins)."""
    with open(d.config, "a") as f:
        f.write(f"\n[ocsp]\n{key} = {value}\n")


def metric(r, name):
    for line in r.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def wait_stored(r, n, timeout=20.0):
    """Fresh responses are stored behind the answer: wait for n stores."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(r, 'smartcert_ocsp_presigned_total{event="stored"}') >= n:
            return True
        time.sleep(0.02)
    return False


def raw_http(port, data, timeout=10, reset_ok=False):
    """Send raw bytes to the responder; what came back (up to the end of
    the body its Content-Length announces, or until it closes or times
    out; a connection reset ends it too when reset_ok)."""
    quiet = (socket.timeout, ConnectionResetError) if reset_ok else socket.timeout
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
            if b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                cl = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                if cl and len(body) >= int(cl[0].split(b":")[1]):
                    break
    except quiet:
        pass
    s.close()
    return out


def stop_child(p, timeout=20):
    """SIGTERM a child process and wait for it (killed if it hangs); its
    exit code."""
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return p.returncode
