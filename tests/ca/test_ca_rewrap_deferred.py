#!/usr/bin/env python3
"""A revocation whose re-wrap the HSM refuses still stands, and the
destruction is done later (docs/evidence.md, "Key groups").

The backend token's directory is a tmpfs of its own, filled up, so that
SoftHSMv2 cannot store the group's next key (a real refusal: the token
object cannot be written).  The store is elsewhere and has room.  Then:

1. `ca revoke` commits the revocation: the certificate is revoked, the key's
   blob is gone, and the group is recorded for a retry (`keygroup-deferred`
   audit record; `ca show` and `store check` name the deferred re-wrap with
   its deadline); the group's other keys stay under the old generation;
2. the token's old objects are intact: the other user's key still has its
   binding MAC and `store check` passes;
3. with the owed re-wrap deleted from the store, `store check` names the
   revoked key whose group was never rotated;
4. with room on the token again, the next CA command (`ca sweep`) owes the
   re-wrap again, re-wraps the group under a new generation, destroys the
   old one, and nothing is owed any more.
The test re-runs itself in a user+mount namespace (tests/lib/fulldisk.py)
and exits 77 if a namespace or a tmpfs mount is not possible.
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB",
                                  os.path.join(os.path.dirname(__file__), "..", "lib")))
import fulldisk  # noqa: E402
from lmdbedit import dump, pairs, rebuild  # noqa: E402

MNT = fulldisk.enter("48m")   # from here on, inside the namespace
from scfixture import Deployment, check, fail  # noqa: E402


def audit_kinds(d):
    return [x.get("kind") for x in d.sc_json("audit", "show")]


def main():
    with Deployment() as d:
        d.stop_signd()
        d.conf_set("ca.key_groups", "1", restart=False)
        for u in ("vic", "oth"):
            d.enrol(u, "p256")
        gen = d.sc_json("ca", "show", "--user", "oth")["keys"][0]["key_group_generation"]
        check(gen == 1, f"both keys in group 0, generation 1 ({gen})")

        # The token directory on a small tmpfs of its own, then filled.
        tokens = os.path.join(d.dir, "hsm", "tokens")
        saved = os.path.join(d.tmp, "tokens-saved")
        shutil.copytree(tokens, saved, symlinks=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700,huge=never", "tmpfs", tokens],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fulldisk.skip(f"cannot mount a tmpfs on the token directory: {r.stderr.strip()}")
        for name in os.listdir(saved):
            src = os.path.join(saved, name)
            (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tokens, name))
        fulldisk.fill(tokens, 0)
        check(fulldisk.free_bytes(tokens) == 0, "the token's file system is full")

        serial = d.sc_json("ca", "show", "--user", "vic")["certificates"][0]["serial"]
        r = d.sc("ca", "revoke", "--serial", serial, "--reason", "keyCompromise", check=False)
        check(r.returncode == 0, f"the revocation commits although the HSM cannot make the group's next key "
                                 f"({r.returncode}: {r.stderr.strip()[-200:]})")
        check("key destruction owed" in r.stderr and "1 re-wrap(s) the HSM refused" in r.stderr,
              f"... and the officer is told that the destruction is owed ({r.stderr.strip()[-300:]})")
        c = d.sc_json("ca", "show", "--serial", serial)
        check(c["status"] == "revoked", "the certificate is revoked")
        vic = d.sc_json("ca", "show", "--user", "vic")["keys"][0]
        check(not vic["blob_present"], f"the revoked key's blob is gone ({vic})")
        check("keygroup-deferred" in audit_kinds(d), "the refused re-wrap is audited (keygroup-deferred)")
        shown = d.sc_json("ca", "show", "--user", "oth")
        pend = shown.get("key_destruction_pending") or {}
        check(pend.get("deferred_rewraps") == 1 and pend.get("due"),
              f"ca show names the deferred re-wrap with its deadline ({pend})")
        check(shown["keys"][0]["key_group_generation"] == 1, "the other key is still under generation 1")
        r = d.sc("store", "check", check=False)
        check(r.returncode == 0 and "1 deferred re-wrap(s) owed" in r.stdout and "binding MAC matches" in r.stdout,
              f"store check: the token and the store are intact, the re-wrap is owed ({r.returncode}: "
              f"{r.stdout.strip()[-300:]})")

        # The re-wrap owed, deleted from the store (someone who can write
        # it): store check names the revoked key whose group was never
        # rotated, and the next ca sweep owes the re-wrap again.
        store = os.path.join(d.dir, "store")
        lines = dump(store)
        i, _ = pairs(lines, "meta")[b"m/keygroup.rotate"]
        del lines[i:i + 2]
        rebuild(d.tmp, store, lines)
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8 and "with no re-wrap owed" in r.stdout and vic["key_id"] in r.stdout,
              f"store check names the revoked key whose group's re-wrap is no longer owed "
              f"({r.returncode}: {r.stdout.strip()[-300:]})")

        # Room again: the next CA command finishes it.
        fulldisk.release(tokens)
        r = d.sc("ca", "sweep", check=False)
        check(r.returncode == 0 and "key destruction owed" not in r.stderr,
              f"ca sweep runs, with nothing left owed ({r.returncode}: {r.stderr.strip()[-200:]})")
        shown = d.sc_json("ca", "show", "--user", "oth")
        check("key_destruction_pending" not in shown, f"nothing is owed any more ({shown.get('key_destruction_pending')})")
        check(shown["keys"][0]["key_group_generation"] == 2, "the other key is re-wrapped under generation 2")
        check("keygroup-rotate" in audit_kinds(d), "the re-wrap is audited (keygroup-rotate)")
        r = d.sc("store", "check", check=False)
        check(r.returncode == 0 and "destruction: none owed" in r.stdout,
              f"store check passes ({r.returncode}: {r.stdout.strip()[-300:]})")
        # The deployment sits deep in the test's namespace directory: its
        # socket goes where a Unix socket's path fits (108 bytes).
        sockdir = tempfile.mkdtemp(prefix="sc-rw-", dir="/tmp")
        sock = os.path.join(sockdir, "signd.sock")
        d.conf_set("signd.socket", sock, restart=False)
        d.conf_set("gateway.service", "unix:" + sock, restart=False)
        d.info["signd_socket"] = sock
        d.start_signd()
        doc = os.path.join(d.tmp, "doc.txt")
        with open(doc, "wb") as f:
            f.write(b"signed after the deferred re-wrap\n")
        r = d.sc("sign", "--user", "oth", "--in", doc, "--authorize", check=False)
        v = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", doc + ".p7s",
                            "-content", doc, "-CAfile", os.path.join(d.dir, "ca", "chain.pem"),
                            "-purpose", "any", "-out", os.devnull], capture_output=True, text=True)
        check(r.returncode == 0 and v.returncode == 0,
              f"the other user signs with the re-wrapped key, verified by openssl ({r.stderr.strip()[-200:]} "
              f"{v.stderr.strip()[-200:]})")
        d.stop_signd()
        shutil.rmtree(sockdir, ignore_errors=True)
        subprocess.run(["umount", tokens], capture_output=True)


if __name__ == "__main__":
    main()
