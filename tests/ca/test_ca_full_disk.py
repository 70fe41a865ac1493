#!/usr/bin/env python3
"""A real full disk: the whole deployment (SoftHSMv2 token, LMDB store with
the audit chain, CRL directory) lives on a 48 MiB tmpfs mounted in a private
user+mount namespace, and a filler file takes the space.  Then:

1. `ca enrol` fails with exit 7 and a message that the disk is full and what
   to do; every user enrolled before is still listed and exportable, the
   audit chain verifies, and the failed user left no record.
2. `crl publish` fails clearly and leaves the published CRLs byte-identical,
   verifying with `openssl crl -verify`, with no staging file behind; then a
   scan over the free space (4 KiB steps, the old CRL files held open as a
   web server serving them would) lets publishes fail wherever the space
   runs out and checks that what each message says about the published
   files is true, that CRL numbers never go back and that no staging file
   is left.
3. `ca revoke` fails clearly and the certificate stays good.
4. With the filler gone: the same revoke, the failed enrolment and a CRL
   publish succeed, and the audit chain verifies.

A reader snapshot is held throughout (tests/lib/fulldisk.py says why).

When a commit finds some room but not enough, LMDB's page write comes back
short and mdb_txn_commit() returns EIO; the store reports that as a full
disk too, since the disk has (almost) no space left.

The test re-runs itself in a user+mount namespace (tests/lib/fulldisk.py)
and exits 77 if a namespace or the tmpfs mount is not possible.
"""
import glob
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB",
                                  os.path.join(os.path.dirname(__file__), "..", "lib")))
import fulldisk  # noqa: E402

FS_SIZE = "48m"
LEAVE = 16 * 1024            # bytes left free when the disk is "full"
EXIT_STORE = 7               # tools/cli.c: SC_ERR_STORE_FULL -> SC_EXIT_STORE

MNT = fulldisk.enter(FS_SIZE)   # from here on, inside the namespace
from scfixture import Deployment, check, fail  # noqa: E402
FILLER = fulldisk.filler(MNT)


def free_bytes():
    return fulldisk.free_bytes(MNT)


def fill_disk(leave):
    fulldisk.fill(MNT, leave)


def set_free(target):
    fulldisk.set_free(MNT, target)


def snapshot(directory):
    out = {}
    for f in sorted(os.listdir(directory)):
        p = os.path.join(directory, f)
        if os.path.isfile(p) and f != ".publish.lock":
            with open(p, "rb") as fh:
                out[f] = hashlib.sha256(fh.read()).hexdigest()
    return out


def token_snapshot(directory):
    """The SoftHSMv2 token's files: names, and the contents of every object
    file (token.object, the token's own state, is rewritten at every login)."""
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, directory)] = (
                    None if f == "token.object" else hashlib.sha256(fh.read()).hexdigest())
    return out


_verified = set()   # SHA-256 of CRL files openssl has verified: the same bytes verify the same


def crl_verify_all(d, crl):
    files = sorted(glob.glob(os.path.join(crl, "*.crl")))
    if len(files) != 35:
        fail(f"expected 35 published CRLs (16 partitions, full and delta, the root's), "
             f"found {len(files)}")
    for f in files:
        with open(f, "rb") as fh:
            digest = hashlib.sha256(fh.read()).digest()
        if digest in _verified:
            continue
        r = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", f, "-noout", "-CAfile",
                            os.path.join(d.dir, "ca", "chain.pem"), "-verify"],
                           capture_output=True, text=True)
        if r.returncode != 0 or "verify OK" not in r.stdout + r.stderr:
            fail(f"{os.path.basename(f)} does not verify: {r.stdout}{r.stderr}")
        _verified.add(digest)
    return len(files)


def crl_number(path):
    r = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", path, "-noout", "-crlnumber"],
                       capture_output=True, text=True, check=True)
    return int(r.stdout.strip().split("=", 1)[1], 16)


def staging_left(crl):
    return [f for f in os.listdir(crl) if f.endswith(".new")]


def audit_ok(d, msg):
    r = d.sc("audit", "verify", "--json", check=False)
    v = json.loads(r.stdout) if r.stdout.strip() else {}
    check(r.returncode == 0 and v.get("ok") is True, f"{msg}: audit chain verifies ({v})")
    return v["records"]


def says_disk_full(r, what):
    """Exit 7, and stderr says the disk is full and to free space (also
    when LMDB's page write came back short and it returned EIO)."""
    err = r.stderr.strip()
    check(r.returncode == EXIT_STORE, f"{what}: exit {EXIT_STORE} (got {r.returncode}): {err}")
    check(("No space left on device" in err or "a short write" in err) and "full" in err
          and "free disk space" in err,
          f"{what}: the message says the disk is full and to free disk space")


def enrol(d, user, idn):
    env = dict(d.env)
    env["SC_TEST_IDN"] = idn
    return d.sc("ca", "enrol", "--user", user, "--name", f"Holder {user}",
                "--id-number-source", "env:SC_TEST_IDN", "--json", env=env, check=False)


pin = None
try:
    with Deployment() as d:
        crl = os.path.join(d.dir, "crl")
        store = os.path.join(d.dir, "store")
        hsm = os.path.join(d.dir, "hsm")
        dev = os.stat(MNT).st_dev
        for p in (d.dir, hsm, store, os.path.join(store, "data.mdb"), d.config):
            if os.stat(p).st_dev != dev:
                fail(f"{p} is not on the test file system")
        check(True, f"token, store, audit and config on the {FS_SIZE} tmpfs at {MNT}")

        # One key group: its key is made by the first enrolment, so a later
        # enrolment adds no token object (a new group's key would).
        d.conf_set("ca.key_groups", "1", restart=False)
        users = {}
        for i, u in enumerate(["alice", "bob", "carol", "dave", "erin", "frank"]):
            r = enrol(d, u, f"A{i:06d}(1)")
            if r.returncode != 0:
                fail(f"enrol {u}: {r.stderr}")
            users[u] = json.loads(r.stdout)["serial"]
        first = d.sc_json("crl", "publish")
        check(os.stat(crl).st_dev == dev, "CRL directory on the test file system")
        crl_verify_all(d, crl)
        crls = snapshot(crl)
        records = audit_ok(d, "before the disk fills")
        token = token_snapshot(hsm)

        pin = fulldisk.Pin(store)
        fill_disk(LEAVE)
        check(free_bytes() == LEAVE, f"disk full: {free_bytes()} bytes left, "
              f"filler {os.path.getsize(FILLER) >> 20} MiB")

        # 1. enrolment until the store cannot grow any more.  Enrolments that
        # still fit (LMDB's free pages, the bytes left) are real and must stay.
        failed = None
        for i in range(200):
            u = f"late{i}"
            r = enrol(d, u, f"B{i:06d}(2)")
            if r.returncode == 0:
                users[u] = json.loads(r.stdout)["serial"]
                continue
            failed = (u, f"B{i:06d}(2)", r)
            break
        if failed is None:
            fail("200 enrolments on a full disk all succeeded")
        u_failed, idn_failed, r = failed
        print(f"# {len(users) - 6} enrolment(s) fitted before the store had to grow")
        says_disk_full(r, f"ca enrol {u_failed} on a full disk")
        check(r.stdout.strip() == "", "no result printed for the failed enrolment")
        listed = {c["user"]: c for c in d.sc_json("ca", "list") if c["user"]}
        check(set(listed) == set(users) and
              all(listed[u]["serial"] == s and listed[u]["status"] == "good"
                  for u, s in users.items()),
              f"all {len(users)} users enrolled before are listed, good, with their serials")
        for u, s in users.items():
            pem = d.sc("ca", "export", "--serial", s).stdout
            x = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem,
                               capture_output=True, text=True)
            if x.returncode != 0 or x.stdout.strip().lower() != f"serial={s}".lower():
                fail(f"export of {u} ({s}) is not its certificate: {x.stderr}")
        check(True, "every enrolled user's certificate exports")
        r = d.sc("ca", "show", "--user", u_failed, check=False)
        check(r.returncode == 3, f"no record of {u_failed} (ca show exits 3)")
        check(not any(e.get("user") == u_failed for e in d.audit()),
              f"no audit record names {u_failed}")
        records = audit_ok(d, "after the failed enrolment")
        check(records == len(d.audit()), "the chain head matches the records")
        check(token_snapshot(hsm) == token, "no object was added to or changed on the SoftHSMv2 token")

        # 3. revocation: one that still fits is real; the first that does not
        # must leave its certificate good and its key in place.
        revoked, victim = [], None
        for u in ["alice", "bob", "carol", "dave", "erin"]:
            r = d.sc("ca", "revoke", "--serial", users[u], "--reason", "keyCompromise",
                     "--json", check=False)
            if r.returncode == 0:
                revoked.append(u)
                continue
            victim = u
            break
        if victim is None:
            fail("every revocation on a full disk succeeded")
        says_disk_full(r, f"ca revoke {victim} on a full disk")
        c = d.sc_json("ca", "show", "--serial", users[victim])
        check(c["status"] == "good" and c["revoked_at"] is None and c["reason"] is None,
              f"{victim}'s certificate is still good")
        k = d.sc_json("ca", "show", "--user", victim)["keys"]
        check(len(k) == 1 and k[0]["state"] == "active" and k[0]["blob_present"],
              f"{victim}'s wrapped key is still there")
        check(not any(e.get("user") == victim and e.get("kind") == "revoke"
                      for e in d.audit()), f"no revoke audit record for {victim}")
        audit_ok(d, "after the failed revocation")

        # 2. CRL publish with a little space left: refused, files untouched.
        r = d.sc("crl", "publish", check=False)
        says_disk_full(r, "crl publish on a full disk")
        check(snapshot(crl) == crls and not staging_left(crl),
              "published CRLs byte-identical, no staging file left")
        crl_verify_all(d, crl)
        check(True, "the previous CRLs still verify with openssl crl -verify")

        # 2b. the same with more and more room: each publish stops at a later
        # point (CRL number, staging files, recording the publish) until one
        # succeeds.  Whatever the outcome, the message must be true.  The old
        # files are held open, as a web server serving them does, so that
        # renaming over them frees no space before the publish is recorded.
        held = [open(f, "rb") for f in glob.glob(os.path.join(crl, "*.crl"))]
        outcomes, last = [], crl_number(os.path.join(crl, "full.crl"))
        for step in range(0, 160):
            set_free(step * 4096)
            before = snapshot(crl)
            r = d.sc("crl", "publish", "--json", check=False)
            after = snapshot(crl)
            if staging_left(crl):
                fail(f"{step * 4} KiB free: staging files left: {staging_left(crl)}")
            crl_verify_all(d, crl)
            n = crl_number(os.path.join(crl, "full.crl"))
            if n < last:
                fail(f"{step * 4} KiB free: full.crl went back from number {last} to {n}")
            last = n
            if r.returncode == 0:
                outcomes.append("published")
                break
            says_disk_full(r, f"crl publish with {step * 4} KiB free")
            if after == before:
                if "unchanged" not in r.stderr:
                    fail(f"{step * 4} KiB free: files unchanged but the message does not "
                         f"say so: {r.stderr}")
                outcomes.append("unchanged")
            else:
                if "unchanged" in r.stderr or f"(number {n}, 35 of 35 files) are published" \
                        not in r.stderr:
                    fail(f"{step * 4} KiB free: CRLs number {n} were published but the "
                         f"message says otherwise: {r.stderr}")
                outcomes.append("published-unrecorded")
        else:
            fail("no CRL publish succeeded with up to 640 KiB free")
        for f in held:
            f.close()
        check(outcomes[-1] == "published" and "published-unrecorded" in outcomes,
              f"CRL publish succeeds once there is room ({outcomes.count('unchanged')} "
              f"refused unchanged, {outcomes.count('published-unrecorded')} published "
              "but not recorded)")
        audit_ok(d, "after the CRL publishes on a nearly full disk")

        # 4. space back
        pin.release()
        pin = None
        set_free(LEAVE)
        os.unlink(FILLER)
        check(free_bytes() > 40 << 20, f"filler removed: {free_bytes() >> 20} MiB free")
        d.sc("ca", "revoke", "--serial", users[victim], "--reason", "keyCompromise")
        c = d.sc_json("ca", "show", "--serial", users[victim])
        check(c["status"] == "revoked" and c["reason"] == "keyCompromise",
              f"the same revocation of {victim} succeeds with space")
        r = enrol(d, u_failed, idn_failed)
        check(r.returncode == 0, f"the failed enrolment of {u_failed} succeeds now "
              f"(same person, so nothing of it was left behind): {r.stderr.strip()}")
        users[u_failed] = json.loads(r.stdout)["serial"]
        r = enrol(d, "after", "C000001(3)")
        check(r.returncode == 0, "a new enrolment succeeds")
        users["after"] = json.loads(r.stdout)["serial"]
        d.sc("ca", "revoke", "--serial", users["after"], "--reason", "superseded")
        res = d.sc_json("crl", "publish")
        check(res["number"] > first["number"] and not staging_left(crl), "CRL publish succeeds")
        crl_verify_all(d, crl)
        check(crl_number(os.path.join(crl, "full.crl")) == res["number"],
              "full.crl carries the new number")
        listed = subprocess.run(["openssl", "crl", "-inform", "DER", "-in",
                                 os.path.join(crl, "full.crl"), "-noout", "-text"],
                                capture_output=True, text=True, check=True).stdout.upper()
        want = set(revoked + [victim, "after"])
        check(all(users[u].upper() in listed for u in want) and
              all(users[u].upper() not in listed for u in set(users) - want),
              f"full.crl lists exactly the revoked certificates ({len(want)})")
        good = {c["user"] for c in d.sc_json("ca", "list", "--status", "good") if c["user"]}
        check(good == set(users) - want, f"{len(good)} users good, the rest revoked")
        audit_ok(d, "after recovery")
        # Each revocation that went through replaced the key group's wrapping
        # key (docs/evidence.md); nothing else on the token changed.
        # (SoftHSMv2 keeps a file an object; NSS one SQLite database.)
        if os.environ.get("SC_TEST_BACKEND") != "nss":
            now_tok = token_snapshot(hsm)
            objs = {k for k in token if k.endswith(".object")}
            now_objs = {k for k in now_tok if k.endswith(".object")}
            check(len(objs - now_objs) == 1 and len(now_objs - objs) == 1 and
                  all(now_tok[k] == token[k] for k in objs & now_objs),
                  "on the SoftHSMv2 token only the key group's wrapping key was replaced")
finally:
    if pin is not None:
        pin.release()
check(fulldisk.leave(MNT), "tmpfs unmounted")
