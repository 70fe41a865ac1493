"""Shared fixture for integration tests: a real deployment in a temporary
directory (its own SoftHSMv2 token, its own LMDB store), created with the
real `smartcert init`, never touching the user's SoftHSMv2 configuration.

    from scfixture import Deployment, skip_unless
    with Deployment() as d:
        d.sc("ca", "enrol", "--user", "alice", ...)       # checked run
        r = d.sc("ca", "revoke", ..., check=False)        # returns CompletedProcess
        d.config, d.dir, d.module, d.gateway_pin, d.info  # facts from `init --json`

Tests that need a tool that is not installed call skip_unless("tool"),
which exits 77 (meson's "skipped"), never 0.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

SMARTCERT = os.environ.get("SMARTCERT_BIN", "smartcert")
BUILDDIR = os.environ.get("SMARTCERT_BUILDDIR", os.getcwd())
SRCDIR = os.environ.get("SMARTCERT_SRCDIR", os.getcwd())


def skip_unless(*tools):
    for t in tools:
        if shutil.which(t) is None:
            print(f"SKIP: {t} is not installed", file=sys.stderr)
            sys.exit(77)


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print(f"ok - {msg}")


class Deployment:
    """A fresh deployment; removed on exit unless SMARTCERT_KEEP_TEST_DIRS=1."""

    def __init__(self, *init_args, prefix="sc-test-"):
        base = os.path.join(BUILDDIR, "test-tmp")
        os.makedirs(base, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=base)
        self.dir = os.path.join(self.tmp, "deploy")
        self.env = dict(os.environ)
        # Never the user's SoftHSMv2 config: init writes its own and the
        # config names it; unset any inherited one to prove that.
        self.env.pop("SOFTHSM2_CONF", None)
        r = subprocess.run([SMARTCERT, "init", "--dir", self.dir, "--json", *init_args],
                           env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            self.close()
            fail(f"smartcert init failed ({r.returncode}): {r.stderr}")
        self.info = json.loads(r.stdout)
        self.config = self.info["config"]
        self.module = os.environ.get("SMARTCERT_PKCS11_MODULE", self.info.get("module"))
        with open(self.info["gateway_pin_file"]) as f:
            self.gateway_pin = f.read().strip()
        self.env["SMARTCERT_CONF"] = self.config

    def sc(self, *args, check=True, input=None, timeout=300, env=None):
        """Run `smartcert ARGS` against this deployment."""
        r = subprocess.run([SMARTCERT, *args], env=env or self.env, capture_output=True,
                           text=True, input=input, timeout=timeout)
        if check and r.returncode != 0:
            fail(f"smartcert {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def sc_json(self, *args):
        return json.loads(self.sc(*args, "--json").stdout)

    def close(self):
        if os.environ.get("SMARTCERT_KEEP_TEST_DIRS") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
