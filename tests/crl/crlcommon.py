"""Helpers for the crl tests (on top of tests/lib/scfixture.py)."""
import glob
import os
import re
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB",
                                  os.path.join(os.path.dirname(__file__), "..", "lib")))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cryptography import x509  # noqa: E402

import crllint  # noqa: E402
from scfixture import Deployment, check, fail, skip_unless  # noqa: E402,F401

FILL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SMARTCERT_BENCH_FILL")


def crl_dir(d):
    return os.path.join(d.dir, "crl")


def load_ca(d):
    with open(os.path.join(d.dir, "ca", "issuing-ca.pem"), "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def load_root(d):
    with open(os.path.join(d.dir, "ca", "root-ca.pem"), "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


ROOT_CRL = "root.crl"


def ca_for(d, path):
    """The CA that signs a published CRL: the root for its ARL (root.crl),
    the issuing CA for every other."""
    return load_root(d) if os.path.basename(path) == ROOT_CRL else load_ca(d)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def load(path):
    return x509.load_der_x509_crl(read(path))


def published(d, out=None):
    return sorted(glob.glob(os.path.join(out or crl_dir(d), "*.crl")))


def lint_all(d, out=None):
    files = published(d, out)
    for f in files:
        probs = crllint.lint_crl(read(f), ca_for(d, f))
        if probs:
            fail(f"{os.path.basename(f)}: " + "; ".join(probs))
    return files


def openssl_crl_verify(d, path):
    r = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", path, "-noout",
                        "-CAfile", os.path.join(d.dir, "ca", "chain.pem"), "-verify"],
                       capture_output=True, text=True)
    return r.returncode == 0 and "verify OK" in (r.stdout + r.stderr), r.stdout + r.stderr


def certtool_check(d, path):
    """certtool --crl-info parses it and --verify-crl verifies it with the CA."""
    r = subprocess.run(["certtool", "--crl-info", "--inder", "--infile", path],
                       capture_output=True, text=True)
    if r.returncode != 0 or "Version: 2" not in r.stdout:
        return False, "--crl-info: " + r.stderr
    which = "root-ca" if os.path.basename(path) == ROOT_CRL else "issuing-ca"
    ca_der = os.path.join(d.tmp, which + ".der")
    if not os.path.exists(ca_der):
        subprocess.run(["openssl", "x509", "-in", os.path.join(d.dir, "ca", which + ".pem"),
                        "-outform", "DER", "-out", ca_der], check=True, capture_output=True)
    r = subprocess.run(["certtool", "--verify-crl", "--load-ca-certificate", ca_der, "--inder",
                        "--infile", path], capture_output=True, text=True)
    if r.returncode != 0 or "Verification output: Verified" not in r.stdout:
        return False, "--verify-crl: " + r.stdout[-300:] + r.stderr
    return True, ""


def verify_all(d, out=None):
    """Every published CRL: the lints, `openssl crl -verify`, GnuTLS
    `certtool --crl-info` and `--verify-crl` (cryptography is in the lints)."""
    files = lint_all(d, out)
    for f in files:
        ok, msg = openssl_crl_verify(d, f)
        if not ok:
            fail(f"openssl crl -verify {f}: {msg}")
        ok, msg = certtool_check(d, f)
        if not ok:
            fail(f"certtool {f}: {msg}")
    check(True, f"{len(files)} CRLs pass the lints, openssl crl -verify and certtool "
          "--crl-info/--verify-crl")
    return files


def config_copy(d, name, section, key, value):
    """A copy of the deployment config (same directory, so relative paths
    still resolve) with section.key replaced."""
    out, cur = [], None
    with open(d.config) as f:
        for line in f:
            m = re.match(r"\s*\[(\w+)\]", line)
            if m:
                cur = m.group(1)
            if cur == section and re.match(rf"\s*{key}\s*=", line):
                line = f"{key} = {value}\n"
            out.append(line)
    path = os.path.join(d.dir, name)
    with open(path, "w") as f:
        f.writelines(out)
    return path


def fill(d, *args):
    if not FILL or not os.path.exists(FILL):
        fail("bench-fill-revoked not built")
    r = subprocess.run([FILL, "--config", d.config, *args], capture_output=True, text=True,
                       env=d.env, timeout=1200)
    if r.returncode != 0:
        fail(f"bench-fill-revoked failed: {r.stderr}")
    return r.stdout


def serial_hex(n):
    return format(n, "x")


def _mix64(x):
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def bench_serial(i):
    """The serial bench-fill-revoked gives certificate number i."""
    b = bytearray(_mix64(i).to_bytes(8, "big") + i.to_bytes(8, "big"))
    b[0] = (b[0] & 0x7F) | 0x10
    return int.from_bytes(b, "big")
