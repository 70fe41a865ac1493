#!/usr/bin/env python3
"""Someone who can write the store and the checkpoint log, but holds no HSM
PIN, against the records a revocation and the checkpoints stand on
(docs/evidence.md):

* the group's generation entry edited before a revocation: the revocation
  refuses (exit 8, "the store was altered") and destroys nothing, rather
  than destroying no group key and saying the key is gone; put back, the
  revocation goes through;
* a revoked certificate's record put back as it was before, its
  revocation-index entry removed (OCSP would answer good, no CRL would list
  it): `store check` finds the record older than the revocation log's event
  about it (exit 8); with that event removed too, the revocation log is
  behind the checkpoint and every command refuses the store;
* the CRL number put back below the newest checkpoint's: `store check` and
  every command refuse the store (exit 8), so no CRL number is issued twice;
* an old store put back and an old checkpoint line appended to the log
  (which an append-only log allows): the copied line verifies on its own
  but does not follow the line before it, and the store is refused;
* the same old store with a whole log of one's own, signed under a key of
  one's own put in place of checkpoint-signer.pem: the log verifies with
  that key, but the key is not the one the configuration pins
  (audit.checkpoint_key), and every command and the responder refuse the
  store; without the pin (a deployment made before it), every command that
  opens the HSM refuses it too: the key is not the HSM's checkpoint key;
* a destruction owed, deleted from the store's list: store check names the
  old group key left on the token, and ca sweep owes it again.

The store is edited with lmdb-utils' mdb_dump/mdb_load."""
import base64
import os
import re
import shutil
import subprocess
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import SRCDIR, Deployment, check, skip_unless  # noqa: E402
from lmdbedit import dump, meta_get, meta_put, pairs, rebuild  # noqa: E402

skip_unless("mdb_dump", "mdb_load")


def main():
    with Deployment(prefix="store-tamper-") as d:
        d.conf_set("ca.key_groups", "1", restart=False)
        store = os.path.join(d.dir, "store")
        for u in ("tam-a", "tam-b", "tam-c"):
            d.enrol(u, "p256")
        gen_key = b"m/keygroup.gen.00000000"
        gen = meta_get(store, gen_key)
        check(gen == (1).to_bytes(4, "big"), f"group 0 is at generation 1 ({gen!r})")

        # 1. The generation entry says another generation: nothing destroyed.
        meta_put(store, gen_key, (7).to_bytes(4, "big"))
        r = d.sc("ca", "revoke", "--user", "tam-a", "--reason", "keyCompromise", check=False)
        check(r.returncode == 8 and "the store was altered" in r.stderr,
              f"the revocation refuses an edited generation entry (exit {r.returncode}): "
              f"{r.stderr.strip()[-200:]}")
        show = d.sc_json("ca", "show", "--user", "tam-a")
        check(show["certificates"][0]["status"] == "good" and
              show["keys"][0]["key_group_generation"] == 1,
              "nothing changed: the certificate is good, the key still under generation 1")
        meta_put(store, gen_key, gen)
        d.sc("ca", "revoke", "--user", "tam-a", "--reason", "keyCompromise")
        show = d.sc_json("ca", "show", "--user", "tam-b")
        check(show["keys"][0]["key_group_generation"] == 2,
              "put back, the revocation goes through and re-wraps the group (generation 2)")

        # A revocation undone by putting the certificate's record back.
        dd = d.enrol("tam-d", "p256")
        serial = bytes.fromhex(dd["serial"])
        before = pairs(dump(store), "certs")[serial][1]
        d.sc("ca", "revoke", "--user", "tam-d", "--reason", "keyCompromise")
        pristine = os.path.join(d.tmp, "data.mdb.revoked")
        shutil.copyfile(os.path.join(store, "data.mdb"), pristine)
        lines = dump(store)
        i, _ = pairs(lines, "certs")[serial]
        lines[i + 1] = " " + before.hex()
        rev = [k for k in pairs(lines, "revoked") if k[4:] == serial]
        check(len(rev) == 1, "the revocation index lists the revoked certificate")
        j, _ = pairs(lines, "revoked")[rev[0]]
        del lines[j:j + 2]
        rebuild(d.tmp, store, lines)
        check(d.sc_json("ca", "show", "--user", "tam-d")["certificates"][0]["status"] == "good",
              "the edited store says the certificate is good")
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8 and "put back" in r.stdout,
              f"store check: the record is older than the revocation log's event "
              f"(exit {r.returncode}): {r.stdout.strip()[-300:]}")
        lines = dump(store)
        last = max(pairs(lines, "revlog"))
        j, _ = pairs(lines, "revlog")[last]
        del lines[j:j + 2]
        rebuild(d.tmp, store, lines)
        r = d.sc("status", check=False)
        check(r.returncode == 8 and "revocation log" in r.stderr,
              f"with the event removed too, the store is behind the checkpoint (exit "
              f"{r.returncode}): {r.stderr.strip()[-200:]}")
        shutil.copyfile(pristine, os.path.join(store, "data.mdb"))
        check(d.sc("store", "check", check=False).returncode == 0, "put back, store check passes")

        # 2. The CRL number put back below the checkpoint's.
        d.sc("crl", "publish")
        d.sc("crl", "publish")
        num_key = b"c/crl.number"
        num = meta_get(store, num_key)
        check(num is not None and int.from_bytes(num, "big") >= 2, f"two CRLs published ({num!r})")
        meta_put(store, num_key, (1).to_bytes(len(num), "big"))
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8 and "CRL number" in (r.stdout + r.stderr),
              f"store check: the CRL number is behind the checkpoint (exit {r.returncode})")
        r = d.sc("crl", "publish", check=False)
        check(r.returncode == 8, f"crl publish refuses the store (exit {r.returncode}): "
              f"{r.stderr.strip()[-200:]}")
        meta_put(store, num_key, num)
        check(d.sc("store", "check", check=False).returncode == 0, "put back, store check passes")

        # 3. An old store and a copied checkpoint line.
        cpdir = os.path.join(d.dir, "checkpoints")
        log = os.path.join(cpdir, "checkpoints.log")
        old = os.path.join(d.tmp, "old-store")
        shutil.copytree(store, old)
        with open(log) as f:
            old_line = f.read().splitlines()[-1]
        d.sc("ca", "revoke", "--user", "tam-b", "--reason", "keyCompromise")
        shutil.rmtree(store)
        shutil.copytree(old, store)
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8, f"the old store alone is refused (exit {r.returncode})")
        with open(log, "a") as f:
            f.write(old_line + "\n")
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8 and "does not follow" in (r.stdout + r.stderr),
              f"with an old line appended it is still refused (exit {r.returncode}): "
              f"{(r.stdout + r.stderr).strip()[-200:]}")
        r = d.sc("status", check=False)
        check(r.returncode == 8, f"and so is every command (status exit {r.returncode})")

        # 4. The same old store with a checkpoint log of one's own: the old
        #    line re-signed under a key of one's own as the log's only line,
        #    and that key's public half in place of checkpoint-signer.pem.
        key = ec.generate_private_key(ec.SECP256R1())
        body = re.sub(r" prev=[0-9a-f]{64}", " prev=" + "0" * 64, old_line[:old_line.index(" sig=")])
        sig = base64.b64encode(key.sign(body.encode(), ec.ECDSA(hashes.SHA256()))).decode()
        with open(log, "w") as f:
            f.write(f"{body} sig={sig}\n")
        pub = os.path.join(cpdir, "checkpoint-signer.pem")
        with open(pub, "wb") as f:
            f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
        r = subprocess.run(["sh", os.path.join(SRCDIR, "scripts", "verify-checkpoints.sh"), log, pub],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"the forged log verifies on its own, with its own key "
              f"({r.returncode}: {(r.stdout + r.stderr).strip()[-160:]})")
        for cmd in (["store", "check"], ["crl", "publish"], ["ca", "list"], ["status"]):
            r = d.sc(*cmd, check=False)
            check(r.returncode == 8 and "audit.checkpoint_key" in (r.stdout + r.stderr),
                  f"{' '.join(cmd)} refuses it: not the key the configuration pins (exit "
                  f"{r.returncode}): {(r.stdout + r.stderr).strip()[-200:]}")
        r = subprocess.run([os.environ.get("SMARTCERT_OCSPD_BIN", "smartcert-ocspd"), "--config",
                            d.config, "--listen", "127.0.0.1:1", "--foreground"],
                           env=d.env, capture_output=True, text=True, timeout=30)
        check(r.returncode != 0 and "audit.checkpoint_key" in r.stderr,
              f"so does the OCSP responder ({r.returncode}: {r.stderr.strip()[-160:]})")
        # A deployment from before the pin: what opens the HSM holds the key
        # against the HSM's checkpoint key.
        with open(d.config) as f:
            conf = f.read()
        with open(d.config, "w") as f:
            f.write(re.sub(r"(?m)^checkpoint_key = .*\n", "", conf))
        for cmd in (["store", "check"], ["crl", "publish"], ["audit", "verify"]):
            r = d.sc(*cmd, check=False)
            check(r.returncode == 8 and "not the HSM's checkpoint key" in (r.stdout + r.stderr),
                  f"without the pin, {' '.join(cmd)} refuses it: the key is not the HSM's (exit "
                  f"{r.returncode}): {(r.stdout + r.stderr).strip()[-200:]}")

    owed_destruction()


def owed_destruction():
    """A destruction owed, deleted from the store's list of them, would leave
    the old group key on the token for good: store check names it, and
    ca sweep owes it again, so the next CA command destroys it."""
    with Deployment(prefix="store-tamper-owed-") as d:
        d.conf_set("ca.key_groups", "1", restart=False)
        store = os.path.join(d.dir, "store")
        for u in ("owe-a", "owe-b"):
            d.enrol(u, "p256")
        r = d.sc("ca", "revoke", "--user", "owe-a", "--reason", "keyCompromise", check=False,
                 env=dict(d.env, SMARTCERT_TEST_DIE_AFTER_COMMIT="1"))
        check(r.returncode == 99, f"the revocation died between its commit and the destruction "
              f"(exit {r.returncode})")
        pending = b"m/keygroup.pending"
        check(len(meta_get(store, pending) or b"") == 16, "generation 1's destruction is owed")
        lines = dump(store)
        i, _ = pairs(lines, "meta")[pending]
        del lines[i:i + 2]
        rebuild(d.tmp, store, lines)
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8 and "no destruction owed" in r.stdout
              and "group 00000000 generation 1" in r.stdout,
              f"store check names the old group key left on the token (exit {r.returncode}): "
              f"{r.stdout.strip()[-300:]}")
        d.sc("ca", "sweep")          # owes it again
        check(any(x.get("kind") == "keygroup-owed" for x in d.audit()), "and audits it")
        d.sc("ca", "sweep")          # the next CA command destroys it
        r = d.sc("store", "check", check=False)
        check(r.returncode == 0 and "destruction: none owed" in r.stdout,
              f"destroyed: store check is clean (exit {r.returncode}): {r.stdout.strip()[-300:]}")


if __name__ == "__main__":
    main()
