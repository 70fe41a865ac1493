#!/usr/bin/env python3
"""Bad input gets one clear message, a non-zero exit and leaves the store
unchanged: wrong backend PIN, missing HSM module, unreadable ID source,
failed init (cleaned up, retry works), read-only directories (non-root)."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import SMARTCERT, Deployment, check, skip_unless  # noqa: E402

EXIT_USAGE, EXIT_HSM, EXIT_STORE = 2, 5, 7


def snapshot(d):
    return d.sc("ca", "list", "--json").stdout + json.dumps(d.sc_json("audit", "verify"))


with Deployment() as d:
    env = dict(d.env, IDN="A1112223")
    d.sc("ca", "enrol", "--user", "one", "--name", "One", "--id-number-source", "env:IDN", env=env)
    env["IDN"] = "A1112224"
    before = snapshot(d)

    # wrong backend PIN: refused once, never retried, store unchanged
    pin_file = d.info["backend_pin_file"]
    good_pin = open(pin_file).read()
    with open(pin_file, "w") as f:
        f.write("wrong-pin\n")
    r = d.sc("ca", "enrol", "--user", "two", "--name", "Two", "--id-number-source", "env:IDN",
             check=False, env=env)
    with open(pin_file, "w") as f:
        f.write(good_pin)
    check(r.returncode == EXIT_HSM and "PIN" in r.stderr and r.stderr.count("\n") == 1,
          f"wrong backend PIN: one clear message, exit 5: {r.stderr.strip()}")
    check(snapshot(d) == before, "store unchanged after the PIN failure")

    # missing HSM module: a config next to the real one, naming a missing module
    conf = open(d.config).read()
    bad_conf = os.path.join(d.dir, "bad-module.conf")
    lines = [("module = /nonexistent/libnothing.so" if ln.startswith("module =") else ln)
             for ln in conf.splitlines()]
    open(bad_conf, "w").write("\n".join(lines) + "\n")
    r = d.sc("ca", "enrol", "--user", "two", "--name", "Two", "--id-number-source", "env:IDN",
             check=False, env=dict(env, SMARTCERT_CONF=bad_conf))
    os.unlink(bad_conf)
    check(r.returncode == EXIT_HSM and "/nonexistent/libnothing.so" in r.stderr
          and r.stderr.count("\n") == 1,
          f"missing HSM module named, exit 5: {r.stderr.strip()}")
    check(snapshot(d) == before, "store unchanged after the module failure")

    # ID-card number sources
    r = d.sc("ca", "enrol", "--user", "two", "--name", "Two", "--id-number-source", "env:NOPE",
             check=False)
    check(r.returncode == EXIT_USAGE and "NOPE" in r.stderr, "unset ID variable: usage error")
    r = d.sc("ca", "enrol", "--user", "two", "--name", "Two", "--id-number-source", "A1112224",
             check=False)
    check(r.returncode == EXIT_USAGE, "a bare ID number on the command line is refused")
    r = d.sc("ca", "enrol", "--user", "bad user", "--name", "Two", "--id-number-source", "env:IDN",
             check=False, env=env)
    check(r.returncode == EXIT_USAGE and "user id" in r.stderr, "malformed user id refused")
    r = d.sc("ca", "enrol", "--batch", "/nonexistent.csv", check=False)
    check(r.returncode == EXIT_STORE and "nonexistent.csv" in r.stderr, "missing batch file named")
    check(snapshot(d) == before, "store unchanged after the refused inputs")

    # read-only storage: the store directory, then the whole deployment.  A
    # non-root user gets read-only modes; root (which ignores modes) runs the
    # command in a private mount namespace with a read-only bind mount.
    def run_readonly(path, *args):
        if os.geteuid() != 0:
            paths = [path] + [os.path.join(r_, f) for r_, ds, fs in os.walk(path) for f in ds + fs]
            modes = {p_: os.stat(p_).st_mode for p_ in paths}
            for p_ in reversed(paths):
                os.chmod(p_, modes[p_] & ~0o222)
            try:
                return d.sc(*args, check=False, env=env)
            finally:
                for p_ in paths:
                    os.chmod(p_, modes[p_])
        skip_unless("unshare")
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", path, SMARTCERT, *args],
                              env=env, capture_output=True, text=True, timeout=120)

    for ro in (os.path.join(d.dir, "store"), d.dir):
        r = run_readonly(ro, "ca", "enrol", "--user", "two", "--name", "Two",
                         "--id-number-source", "env:IDN")
        check(r.returncode == EXIT_STORE and r.stderr.count("\n") == 1 and "read-only" in r.stderr,
              f"read-only {os.path.basename(ro)}: one clear message, exit 7: {r.stderr.strip()}")
        check(snapshot(d) == before, "store unchanged after the read-only failure")

    # init refused on a non-empty directory, nothing touched
    r = subprocess.run([SMARTCERT, "init", "--dir", os.path.join(d.dir, "ca")], env=d.env,
                       capture_output=True, text=True)
    check(r.returncode != 0 and "not empty" in r.stderr, "init into a non-empty directory refused")

    # failed init cleans up and a retry works
    target = os.path.join(d.tmp, "second")
    r = subprocess.run([SMARTCERT, "init", "--dir", target, "--backend-module", "/nonexistent.so"],
                       env=d.env, capture_output=True, text=True)
    check(r.returncode == EXIT_HSM and "/nonexistent.so" in r.stderr, f"init with a missing module: {r.stderr.strip()}")
    check(not os.path.exists(target), "nothing left behind")
    notmod = os.path.join(d.tmp, "notamodule.so")
    open(notmod, "w").write("not a shared object\n")
    r = subprocess.run([SMARTCERT, "init", "--dir", target, "--backend-module", notmod],
                       env=d.env, capture_output=True, text=True)
    check(r.returncode != 0, f"init with a broken module fails: {r.stderr.strip()}")
    check(not os.path.exists(target), "failed init removed what it created")
    r = subprocess.run([SMARTCERT, "init", "--dir", target, "--json"], env=d.env,
                       capture_output=True, text=True)
    check(r.returncode == 0 and json.loads(r.stdout)["dir"] == target, "retry succeeds")
    if os.geteuid() != 0:
        ro = os.path.join(d.tmp, "ro")
        os.mkdir(ro, 0o555)
        r = subprocess.run([SMARTCERT, "init", "--dir", os.path.join(ro, "x")], env=d.env,
                           capture_output=True, text=True)
        check(r.returncode != 0 and "not writable" in r.stderr, "init under a read-only directory refused")
    shutil.rmtree(target, ignore_errors=True)
print("PASS")
