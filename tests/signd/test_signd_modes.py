#!/usr/bin/python3
"""File modes are part of the trust boundary:

* init leaves secrets/, the HSM token files and the store readable by their
  owner alone;
* the signing service refuses to start, naming the chmod that fixes it,
  when the store or secrets/ is group- or world-readable, and the CLI warns;
* the README's backup and restore steps (umask 077, mdb_copy) keep the
  store private;
* `smartcert status` warns while a demo authorisation key is trusted, and a
  deployment made with --no-demo-authz has no demo key at all."""
import os
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import SMARTCERT, Deployment, check, skip_unless  # noqa: E402

SIGND = os.environ.get("SMARTCERT_SIGND_BIN", "smartcert-signd")


def signd_refuses(d):
    r = subprocess.run([SIGND, "--config", d.config], env=d.env, capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stderr


def main():
    skip_unless("mdb_copy")
    with Deployment(prefix="signd-modes-") as d:
        for sub in ("secrets", "hsm", "hsm/tokens", "store", "gateway", "authz-demo"):
            mode = os.stat(os.path.join(d.dir, sub)).st_mode & 0o777
            check(mode == 0o700, f"init: {sub}/ is 0700 ({oct(mode)})")
        mode = os.stat(os.path.join(d.dir, "store", "data.mdb")).st_mode & 0o777
        check(mode & 0o077 == 0, f"init: the store file is owner-only ({oct(mode)})")
        check(os.stat(os.path.join(d.dir, "gateway.conf")).st_mode & 0o777 == 0o644,
              "init: gateway.conf (no secret in it) is world-readable")

        d.stop_signd()
        for sub in ("store", "secrets"):
            path = os.path.join(d.dir, sub)
            os.chmod(path, 0o755)
            try:
                rc, err = signd_refuses(d)
                check(rc != 0 and "readable by other accounts" in err and f"chmod 0700 '{path}'" in err,
                      f"{sub}/ 0755: the signing service refuses to start, naming the fix (exit {rc})")
                r = d.sc("status", check=False)
                check("warning" in r.stderr and f"chmod 0700 '{path}'" in r.stderr,
                      f"{sub}/ 0755: the CLI warns")
            finally:
                os.chmod(path, 0o700)
        d.start_signd()
        check(d.signd_proc.poll() is None, "modes repaired: the service starts")

        # The README's backup, then a restore, keep the modes.
        backup = os.path.join(d.tmp, "backup")
        store = os.path.join(d.dir, "store")
        subprocess.run(["sh", "-c", f'umask 077 && mkdir -p "{backup}" && mdb_copy -c "{store}" "{backup}"'],
                       check=True)
        check(os.stat(backup).st_mode & 0o077 == 0 and
              os.stat(os.path.join(backup, "data.mdb")).st_mode & 0o077 == 0,
              "the documented backup is owner-only")
        d.stop_signd()
        restored = os.path.join(d.tmp, "restored")
        subprocess.run(["sh", "-c", f'umask 077 && mkdir -p "{restored}" && mdb_copy "{backup}" "{restored}"'],
                       check=True)
        os.rename(store, store + ".old")
        os.rename(restored, store)
        d.start_signd()
        check(d.signd_proc.poll() is None and
              os.stat(os.path.join(store, "data.mdb")).st_mode & 0o077 == 0,
              "the documented restore is owner-only and the service starts on it")

        r = d.sc("status", check=False)
        check("demo authorisation key" in r.stderr, "status warns while the demo authorisation key is trusted")

    with Deployment("--no-demo-authz", prefix="signd-nodemo-", signd=False) as d:
        check(not os.listdir(os.path.join(d.dir, "authz-demo")), "--no-demo-authz: no demo key is made")
        conf = open(d.config).read()
        check("demo_key" not in conf.replace("# trusted_key", ""), "--no-demo-authz: no demo key in the configuration")
        r = d.sc("status", check=False)
        check("demo authorisation key" not in r.stderr, "--no-demo-authz: no demo warning")
        rc, err = signd_refuses(d)
        check(rc != 0 and "trusted" in err.lower(),
              f"--no-demo-authz: the service will not sign until a key is installed ({err.strip()[-160:]})")


if __name__ == "__main__":
    main()
