"""Helpers for the crl tests (on top of tests/lib/scfixture.py)."""
import glob
import os
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


def read(path):
    with open(path, "rb") as f:
        return f.read()


def load(path):
    return x509.load_der_x509_crl(read(path))


def published(d, out=None):
    return sorted(glob.glob(os.path.join(out or crl_dir(d), "*.crl")))


def lint_all(d, out=None):
    ca = load_ca(d)
    files = published(d, out)
    for f in files:
        probs = crllint.lint_crl(read(f), ca)
        if probs:
            fail(f"{os.path.basename(f)}: " + "; ".join(probs))
    return files


def openssl_crl_verify(d, path):
    r = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", path, "-noout",
                        "-CAfile", os.path.join(d.dir, "ca", "chain.pem"), "-verify"],
                       capture_output=True, text=True)
    return r.returncode == 0 and "verify OK" in (r.stdout + r.stderr), r.stdout + r.stderr


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
