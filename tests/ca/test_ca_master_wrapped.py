#!/usr/bin/env python3
"""Keys wrapped under the master key, in no key group, cannot be destroyed
by a revocation: every copy of their blob unwraps for as long as the master
key exists.  Enrolment never makes them; a store made before key groups
holds them (here: tests/ca/bench-fill ... master-wrapped writes such keys
through the real issuance path).  `store check` names them and exits 8;
keys in their groups pass."""
import os
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check, fail  # noqa: E402

FILL = os.environ.get("SMARTCERT_BENCH_FILL", "")


def fill(d, n, *mode):
    r = subprocess.run([FILL, d.config, str(n), *mode], env=d.env, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"bench-fill {n} {' '.join(mode)}: {r.stderr.strip()[-300:]}")


def main():
    if not os.access(FILL, os.X_OK):
        fail(f"bench-fill not built ({FILL!r})")
    with Deployment(prefix="master-wrapped-") as d:
        d.stop_signd()
        fill(d, 3)
        shown = d.sc_json("ca", "show", "--user", "fill00000001")
        key = shown["keys"][0]
        check(key["key_group_generation"] >= 1, f"a filled key sits in its key group ({key})")
        r = d.sc("store", "check", check=False)
        check(r.returncode == 0 and "wrapped under the master key" not in r.stdout,
              f"keys in their groups check clean ({r.returncode}: {r.stdout.strip()[-300:]})")
        fill(d, 2, "master-wrapped")
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8 and "2 wrapped under the master key in no key group" in r.stdout
              and "renew each with a new key" in r.stdout,
              f"store check names the keys no revocation can destroy ({r.returncode}: {r.stdout.strip()[-300:]})")


if __name__ == "__main__":
    main()
