#!/usr/bin/python3
"""Evidence the store's owner cannot rewrite: each tampering an attacker
with write access to the store can do is detected, with exit 8 and a
message that says what happened.

* the tail of the audit log dropped and its head rewritten to match;
* a record deleted mid-chain, the chain recomputed without the audit key,
  the head rewritten;
* the audit log emptied;
* the whole store rolled back to an earlier copy (a keyCompromise
  revocation undone): the CLI, the signing service and the responder all
  refuse it;
* an old backup put back without `store restore`;
* a record removed under its indexes, or cut short, an index entry
  pointed at a record that does not agree, and a key destruction overdue
  (`store check`);
and `store restore --confirm-rollback` is the way back: audited, signed
into a new checkpoint, and tokens valid from before it are refused.  The
checkpoint log verifies with the openssl CLI alone."""
import hashlib
import hmac
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from lmdbedit import dump, load, meta_get, meta_put, rebuild  # noqa: E402
from scfixture import SRCDIR, Deployment, Gateway, check, expect_ckr, fail, mint_token, pykcs11_or_skip, skip_unless  # noqa: E402

P = pykcs11_or_skip()
OCSPD = os.environ.get("SMARTCERT_OCSPD_BIN", "smartcert-ocspd")
SIGND = os.environ.get("SMARTCERT_SIGND_BIN", "smartcert-signd")


def records(lines):
    """{seq: (key line index, value line index, bytes)} of an mdb_dump -s audit."""
    body = [i for i, ln in enumerate(lines) if ln.startswith(" ")]
    out = {}
    for k, v in zip(body[0::2], body[1::2]):
        out[int(lines[k].strip(), 16)] = (k, v, bytes.fromhex(lines[v].strip()))
    return lines, out


def set_head(d, seq, mac):
    """Rewrite the audit head in the store's metadata (what an attacker with
    the file can do)."""
    store = os.path.join(d.dir, "store")
    lines = dump(store, "meta")
    key = " " + "m/audit.head".encode().hex()
    i = lines.index(key)
    lines[i + 1] = " " + (struct.pack(">Q", seq) + mac).hex()
    load(store, lines, "meta")


def expect_refused(d, what):
    r = d.sc("status", check=False)
    v = d.sc("audit", "verify", check=False)
    check(r.returncode == 8 and v.returncode == 8 and ("checkpoint" in v.stderr or "record" in v.stderr),
          f"{what}: status and audit verify exit 8 ({r.returncode}, {v.returncode}: {v.stderr.strip()[-160:]})")


def main():
    skip_unless("mdb_dump", "mdb_load", "openssl")
    with Deployment(prefix="evidence-") as d:
        for u in ("ann", "ben"):
            d.enrol(u, "p256")
        store = os.path.join(d.dir, "store")
        cpdir = os.path.join(d.dir, "checkpoints")
        log = os.path.join(cpdir, "checkpoints.log")
        pristine = os.path.join(d.tmp, "pristine")
        d.stop_signd()
        shutil.copytree(store, pristine)
        d.start_signd()

        # The checkpoint log verifies offline with openssl alone.
        r = subprocess.run(["sh", os.path.join(SRCDIR, "scripts", "verify-checkpoints.sh"), log,
                            os.path.join(cpdir, "checkpoint-signer.pem")], capture_output=True, text=True)
        check(r.returncode == 0 and "checkpoints verify" in r.stdout,
              f"the checkpoint log verifies with the openssl CLI ({r.stdout.strip()[:80]})")

        def reset():
            d.stop_signd()
            shutil.rmtree(store)
            shutil.copytree(pristine, store)

        # 1. The tail dropped and the head rewritten to the new last record.
        reset()
        _, recs = records(dump(store, "audit"))
        last = max(recs)
        # rebuild the store without the last record
        full = dump(store)
        start = full.index("database=audit")
        key = " " + format(last, "016x")
        i = full.index(key, start)
        del full[i:i + 2]
        rebuild(d.tmp, store, full)
        prev_mac = recs[last - 1][2][-32:]
        set_head(d, last - 1, prev_mac)
        v = d.sc("audit", "verify", check=False)
        check(v.returncode == 8 and "checkpoint" in v.stderr,
              f"tail dropped, head rewritten: the chain alone is intact, the checkpoint is not ({v.stderr.strip()[-120:]})")
        expect_refused(d, "tail dropped, head rewritten")

        # 2. A record deleted mid-chain, the chain recomputed without the
        #    audit key (here: any other key), the head rewritten.
        reset()
        full = dump(store)
        start = full.index("database=audit")
        body = [i for i in range(start, len(full)) if full[i].startswith(" ")]
        pairs = []
        for kk, vv in zip(body[0::2], body[1::2]):
            if full[kk].startswith(" ") and len(full[kk].strip()) == 16:
                pairs.append((kk, vv))
            if full[vv + 1:vv + 2] == ["DATA=END"]:
                break
        seqs = [int(full[kk].strip(), 16) for kk, _ in pairs]
        victim = seqs[len(seqs) // 2]
        guess = b"not the audit key"
        prev = None
        new_seq = 0
        out = []
        for (kk, vv), seq in zip(pairs, seqs):
            raw = bytes.fromhex(full[vv].strip())
            if seq == victim:
                continue
            new_seq += 1
            body_b = bytearray(raw[:-64])
            body_b[1:9] = struct.pack(">Q", new_seq)
            prev = prev if prev is not None else b"\0" * 32
            mac = hmac.new(guess, prev + bytes(body_b), hashlib.sha256).digest()
            out.append((new_seq, bytes(body_b) + prev + mac))
            prev = mac
        # replace the audit table wholesale
        head_lines = full[:pairs[0][0]]
        tail_i = pairs[-1][1] + 1
        table = [f" {s:016x}\n {v.hex()}" for s, v in out]
        full2 = head_lines + "\n".join(table).split("\n") + full[tail_i:]
        rebuild(d.tmp, store, full2)
        set_head(d, new_seq, prev)
        v = d.sc("audit", "verify", check=False)
        check(v.returncode == 8 and "record 1 " in v.stderr.replace(":", " "),
              f"a record deleted and the chain recomputed without the key: broken at record 1 ({v.stderr.strip()[-120:]})")
        expect_refused(d, "record deleted mid-chain, chain recomputed")

        # 3. The log emptied.
        reset()
        full = dump(store)
        start = full.index("database=audit")
        end = full.index("DATA=END", start)
        hdr_end = full.index("HEADER=END", start)
        full3 = full[:hdr_end + 1] + full[end:]
        rebuild(d.tmp, store, full3)
        set_head(d, 0, b"\0" * 32)
        expect_refused(d, "audit log emptied")

        # 4. The whole store rolled back: a keyCompromise revocation undone.
        reset()
        d.start_signd()
        backup = os.path.join(d.tmp, "backup")
        d.sc("store", "backup", backup)
        check(os.stat(backup).st_mode & 0o077 == 0 and
              os.stat(os.path.join(backup, "store", "data.mdb")).st_mode & 0o077 == 0,
              "store backup is owner-only")
        gw_kid = d.enrol("cat", "p256")
        kid = gw_kid.get("key_id") or gw_kid["keys"][0]["key_id"]
        d.stop_signd()
        rolled = os.path.join(d.tmp, "before-revoke")
        shutil.copytree(store, rolled)
        d.sc("ca", "revoke", "--user", "cat", "--reason", "keyCompromise")
        shutil.rmtree(store)
        shutil.copytree(rolled, store)
        expect_refused(d, "store rolled back past a revocation")
        r = subprocess.run([SIGND, "--config", d.config], env=d.env, capture_output=True, text=True, timeout=30)
        check(r.returncode == 8 and "rolled back" in r.stderr,
              f"the signing service refuses a rolled-back store ({r.returncode}: {r.stderr.strip()[-120:]})")
        r = subprocess.run([OCSPD, "--config", d.config, "--listen", "127.0.0.1:1", "--foreground"],
                           env=d.env, capture_output=True, text=True, timeout=30)
        check(r.returncode != 0 and "rolled back" in r.stderr,
              f"the OCSP responder refuses it too ({r.returncode}: {r.stderr.strip()[-120:]})")

        # 5. An old backup put back by hand, without store restore.
        shutil.rmtree(store)
        shutil.copytree(os.path.join(backup, "store"), store)
        expect_refused(d, "an old backup copied back by hand")

        # ... and the way back on purpose.
        r = d.sc("store", "restore", "--from", backup, check=False)
        check(r.returncode == 2 and "--confirm-rollback" in r.stderr, "store restore needs --confirm-rollback")
        d.sc("store", "restore", "--from", backup, "--confirm-rollback")
        r = d.sc("store", "check", check=False)
        check(r.returncode == 0 and "intact" in r.stdout, f"after store restore the store checks ({r.stdout.strip()})")
        check(any(x.get("kind") == "store-restore" for x in d.audit()), "the restore is audited")
        # Tokens valid from before the restore are refused.
        d.start_signd()
        gw = Gateway(d)
        key, akid, _ = gw.key("ann")
        dg = hashlib.sha256(b"after the restore").digest()
        import time
        old = mint_token(d, "ann", akid, [("sha256", dg)], now=int(time.time()) - 60)
        expect_ckr(lambda: gw.sign(key, P.Mechanism(P.CKM_ECDSA, None), dg, old), P.CKR_PIN_EXPIRED,
                   "a token valid from before the restore is refused")
        gw.close()
        # ... and so is a renewal consent: it may have renewed in the lost
        # window already.  One valid only from after the restore renews.
        ann = [c for c in d.sc_json("ca", "show", "--user", "ann")["certificates"]
               if c["status"] == "good"][0]["serial"]
        consent = d.sc("authz", "issue", "--user", "ann", "--key", akid, "--purpose", "renew",
                       "--serial", ann, "--not-before-offset", "-60").stdout.strip()
        r = d.sc("ca", "renew", "--user", "ann", "--consent", consent, check=False)
        check(r.returncode != 0 and "restored" in r.stderr,
              f"a consent valid from before the restore renews nothing ({r.returncode}: "
              f"{r.stderr.strip()[-160:]})")
        later = dict(d.env, SMARTCERT_FAKE_TIME=str(int(time.time()) + 600))
        consent = d.sc("authz", "issue", "--user", "ann", "--key", akid, "--purpose", "renew",
                       "--serial", ann, env=later).stdout.strip()
        # A restore time that is not a time (the store edited by hand) is an
        # integrity failure, never read as "not restored": renewal and the
        # signing service refuse, and the consent is not spent.
        d.stop_signd()
        when = meta_get(store, b"m/store.restored_at")
        check(when is not None and when.isdigit(), f"store restore recorded its time ({when!r})")
        meta_put(store, b"m/store.restored_at", when[:-1] + b"x")
        r = d.sc("ca", "renew", "--user", "ann", "--consent", consent, "--keep-key", check=False,
                 env=later)
        check(r.returncode == 8 and "not a time" in r.stderr,
              f"a restore time that is not a time stops renewal ({r.returncode}: {r.stderr.strip()[-160:]})")
        r = subprocess.run([SIGND, "--config", d.config], env=d.env, capture_output=True, text=True,
                           timeout=30)
        check(r.returncode == 8 and "not a time" in r.stderr,
              f"... and the signing service ({r.returncode}: {r.stderr.strip()[-160:]})")
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8 and "restore:     the store's store.restored_at is not a time" in r.stdout,
              f"... and store check names it ({r.returncode}: {r.stdout.strip()[-200:]})")
        meta_put(store, b"m/store.restored_at", when)
        r = d.sc("store", "check", check=False)
        check(r.returncode == 0 and "restore:     restored at " in r.stdout,
              f"put back, store check shows when the store was restored ({r.stdout.strip()[-200:]})")
        r = d.sc("ca", "renew", "--user", "ann", "--consent", consent, "--keep-key", check=False,
                 env=later)
        check(r.returncode == 0, f"a consent from after the restore renews ({r.stderr.strip()[-160:]})")

        # 6. store check reads every record: a key record removed while its
        #    indexes still name it, and a certificate record cut short, are
        #    each named with their database.
        d.stop_signd()
        good = os.path.join(d.tmp, "good")
        shutil.copytree(store, good)
        full = dump(store)
        start = full.index("database=keys")
        first = full.index("HEADER=END", start) + 1
        del full[first:first + 2]
        rebuild(d.tmp, store, full)
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8 and "missing key" in r.stdout and "'keyseq'" in r.stdout,
              f"store check names an index entry whose key record is gone ({r.stdout.strip()[:200]})")
        shutil.rmtree(store)
        shutil.copytree(good, store)
        lines = dump(store, "certs")
        body = lines.index("HEADER=END") + 2
        lines[body] = lines[body][:-8]
        load(store, lines, "certs")
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8 and "'certs'" in r.stdout and "corrupt record" in r.stdout,
              f"store check names a certificate record cut short ({r.stdout.strip()[:200]})")
        shutil.rmtree(store)
        shutil.copytree(good, store)
        r = d.sc("store", "check", check=False)
        check(r.returncode == 0 and "every index entry names its record" in r.stdout,
              f"the untouched copy checks clean ({r.stdout.strip()[:200]})")

        # 7. store check holds every index entry to the record it names:
        #    each change below (what an attacker with the file can do with
        #    mdb_dump and mdb_load) points an entry at something that exists
        #    but does not agree, and is named with its database.
        def tampered(db, change, expect, what, named=None):
            full = dump(store)
            start = full.index("database=" + db)
            first = full.index("HEADER=END", start) + 1
            end = full.index("DATA=END", start)
            body = full[first:end]
            pairs = [[body[i], body[i + 1]] for i in range(0, len(body), 2)]
            change(full, pairs)
            full[first:end] = [x for kv in pairs for x in kv]
            rebuild(d.tmp, store, [x for x in full if x is not None])
            r = d.sc("store", "check", check=False)
            check(r.returncode == 8 and f"'{named or db}'" in r.stdout and expect in r.stdout,
                  f"store check: {what} ({r.returncode}: {r.stdout.strip()[:240]})")
            shutil.rmtree(store)
            shutil.copytree(good, store)

        def swap_users(full, pairs):
            """Swap the values of two entries of different users."""
            a = pairs[0]
            b = next(kv for kv in pairs if kv[0] != a[0])
            a[1], b[1] = b[1], a[1]

        def other_group(full, pairs):
            """Move one key's entry under a group it is not wrapped in."""
            pairs[0][0] = " " + b"ffffffff".hex()

        def drop_owner(full, pairs):
            """Delete a user record and its identity-hash entry, leaving
            the user's key and certificate in place."""
            victim = pairs[0]
            pairs.remove(victim)
            uid = bytes.fromhex(victim[0].strip())
            start = full.index("database=idhash")
            end = full.index("DATA=END", start)
            for i in range(start, end):
                if full[i].startswith(" ") and uid in bytes.fromhex(full[i].strip()):
                    full[i - 1] = full[i] = None    # keeps the indexes above valid
                    break

        tampered("idhash", swap_users, "names a user with another identity hash",
                 "two identity hashes swapped between users")
        tampered("userkeys", swap_users, "names another user's key",
                 "a user's key index pointed at another user's key")
        tampered("usercerts", swap_users, "names another user's certificate",
                 "a user's certificate index pointed at another user's certificate")
        tampered("groupkeys", other_group, "names a key not wrapped under this group",
                 "a key listed under a key group it is not wrapped in")
        tampered("users", drop_owner, "names a missing user",
                 "a user removed while its key and certificate remain", named="keys")

        # 8. Key destruction owed after a revocation (here: a CLI that dies
        #    between its commit and the destruction) is due within 24 hours.
        #    store check reports it while it is due, and fails once it is
        #    overdue; the next CA command finishes it.
        if os.environ.get("SMARTCERT_TEST_HOOKS") == "1":
            import time
            env = dict(d.env)
            env["SMARTCERT_TEST_DIE_AFTER_COMMIT"] = "1"
            r = d.sc("ca", "revoke", "--user", "ben", "--reason", "keyCompromise", check=False, env=env)
            check(r.returncode != 0, f"the test hook killed the CLI after its commit ({r.returncode})")
            r = d.sc("store", "check", check=False)
            check(r.returncode == 0 and "destruction: 1 old group key(s)" in r.stdout and "due by" in r.stdout,
                  f"store check reports the destruction owed, with its deadline ({r.stdout.strip()[-240:]})")
            late = dict(d.env)
            late["SMARTCERT_FAKE_TIME"] = str(int(time.time()) + 25 * 3600)
            r = d.sc("store", "check", check=False, env=late)
            check(r.returncode == 8 and "past the deadline" in r.stdout,
                  f"25 hours later store check fails on it ({r.returncode}: {r.stdout.strip()[-240:]})")
            d.sc("ca", "sweep")
            r = d.sc("store", "check", check=False, env=late)
            check(r.returncode == 0 and "destruction: none owed" in r.stdout,
                  f"after the next CA command none is owed ({r.returncode}: {r.stdout.strip()[-240:]})")


if __name__ == "__main__":
    main()
