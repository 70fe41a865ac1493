#!/usr/bin/env python3
"""Revocation destroys the key for real (issue 13, item 4; docs/evidence.md).

For a P-256 and an RSA key in one key group (ca.key_groups = 1):
- before the revocation, the wrapped blob is carved out of the live data.mdb
  (mdb_dump of the `keys` database, then every place its bytes sit in the
  file) and out of a backup (`smartcert store backup`), and the probe shows
  the harness can unwrap it with the group key (the control);
- after `ca revoke`, no copy (the live file's bytes, free pages included,
  and the backup's) unwraps with any secret key left on the backend token,
  tried one by one with the backend PIN (tests/ca/unwrap-probe.c);
- the other users of the group still sign through the signing service, and
  their records name the new generation;
- a CLI that dies between its commit and the destruction (test hook) leaves
  a pending destruction that `ca show` reports and the next CA command
  finishes.
"""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check, fail, need_test_hooks, skip_unless  # noqa: E402

PROBE = os.environ.get("SMARTCERT_UNWRAP_PROBE", "")


def keys_db(d):
    """{key_id: blob} from `mdb_dump -s keys` of the live store (record
    layout: docs/store-layout.md; version 2 key records)."""
    r = subprocess.run(["mdb_dump", "-s", "keys", os.path.join(d.dir, "store")],
                       capture_output=True, text=True, check=True)
    lines = r.stdout.split("HEADER=END\n", 1)[1].splitlines()
    out = {}
    pairs = [bytes.fromhex(x.strip()) for x in lines if x.startswith(" ")]
    for k, v in zip(pairs[0::2], pairs[1::2]):
        p = 1                                          # version byte
        for _ in range(2):                             # key_id, user_id
            n = int.from_bytes(v[p:p + 2], "big")
            p += 2 + n + 1
        p += 8 + 1 + 1                                 # seq, alg, state
        n = int.from_bytes(v[p:p + 4], "big")
        out[k.decode()] = v[p + 4:p + 4 + n]
    return out


def carve(path, blob):
    """Every copy of `blob` in the file's bytes (offsets)."""
    with open(path, "rb") as f:
        data = f.read()
    return [m.start() for m in re.finditer(re.escape(blob), data)]


def carve_out(d, blob, sources, tag):
    """Every copy of `blob` in each (name, path) of `sources`, each written
    to a file of its own, TAG-NAME-N.blob; their paths."""
    out = []
    for src, path in sources:
        for i, off in enumerate(carve(path, blob)):
            name = os.path.join(d.tmp, f"{tag}-{src}-{i}.blob")
            with open(path, "rb") as f, open(name, "wb") as g:
                f.seek(off)
                g.write(f.read(len(blob)))
            out.append(name)
    return out


def probe(d, files):
    conf = d.conf_get("hsm.softhsm_conf", "hsm/softhsm2.conf")
    pin = d.conf_get("hsm.pin_source", "file:secrets/backend.pin").split(":", 1)[1]
    base = os.path.dirname(d.config)
    env = dict(d.env)
    env["SOFTHSM2_CONF"] = conf if os.path.isabs(conf) else os.path.join(base, conf)
    if d.conf_get("hsm.backend", "softhsm2") == "nss":
        nss_dir = d.conf_get("hsm.nss_dir", "hsm/nssdb")
        env["UNWRAP_PROBE_NSS_DIR"] = nss_dir if os.path.isabs(nss_dir) else os.path.join(base, nss_dir)
    token = re.search(r"token=([^;]+)", d.conf_get("hsm.token", "pkcs11:token=smartcert-backend")).group(1)
    r = subprocess.run([PROBE, d.conf_get("hsm.module"), token,
                        pin if os.path.isabs(pin) else os.path.join(base, pin), *files],
                       env=env, capture_output=True, text=True, timeout=120)
    if r.returncode == 77:
        print(f"SKIP: {r.stderr.strip()}", file=sys.stderr)
        sys.exit(77)
    if r.returncode != 0:
        fail(f"unwrap-probe failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)


def signs(d, user):
    doc = os.path.join(d.tmp, f"doc-{user}.txt")
    with open(doc, "wb") as f:
        f.write(b"still signing after a revocation in my key group\n")
    r = d.sc("sign", "--user", user, "--in", doc, "--authorize", check=False)
    if r.returncode != 0:
        return False, r.stderr.strip()
    v = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", doc + ".p7s",
                        "-content", doc, "-CAfile", os.path.join(d.dir, "ca", "chain.pem"),
                        "-purpose", "any", "-out", os.devnull], capture_output=True, text=True)
    return v.returncode == 0, v.stderr.strip()


def key_of(d, user):
    return d.sc_json("ca", "show", "--user", user)["keys"][0]


def main():
    skip_unless("mdb_dump", "openssl")
    need_test_hooks()
    if not PROBE:
        fail("SMARTCERT_UNWRAP_PROBE is not set")
    with Deployment(prefix="keydestroy-", signd=True) as d:
        d.conf_set("ca.key_groups", "1")
        victims = {"vic-ec": "p256", "vic-rsa": "rsa2048"}
        others = {"oth-ec": "p256", "oth-rsa": "rsa2048"}
        serial = {}
        for u, t in {**victims, **others}.items():
            serial[u] = d.enrol(u, t)["serial"]
        for u in others:
            ok, err = signs(d, u)
            check(ok, f"{u} signs through the service before ({err[:200]})")
        kid = {u: key_of(d, u)["key_id"] for u in serial}
        check(all(key_of(d, u)["key_group"] == 0 and key_of(d, u)["key_group_generation"] == 1
                  for u in serial), "every key is in group 0, wrapped under generation 1")

        # Carve the victims' blobs: from the keys database, then every copy
        # of those bytes in the live file and in a backup.
        blobs = keys_db(d)
        live = os.path.join(d.dir, "store", "data.mdb")
        backup = os.path.join(d.tmp, "backup")
        d.sc("store", "backup", backup)
        bfile = os.path.join(backup, "store", "data.mdb")
        files = {}
        for u in victims:
            b = blobs[kid[u]]
            check(len(b) >= 64 and carve(live, b) and carve(bfile, b),
                  f"{u}: its {len(b)}-byte blob is in the live file ({len(carve(live, b))} copies) "
                  f"and in the backup ({len(carve(bfile, b))})")
            files.update(dict.fromkeys(carve_out(d, b, (("live", live), ("backup", bfile)), u), u))
        before = probe(d, sorted(files))
        got = {os.path.basename(f) for f, _ in before["unwrapped"]}
        check(got == {os.path.basename(f) for f in files} and
              all(lbl == "smartcert-kg-00000000-1" for _, lbl in before["unwrapped"]),
              f"control: before the revocation every carved copy ({len(files)}) unwraps, "
              f"with the group key smartcert-kg-00000000-1")

        # Revoke the P-256 victim: the group is re-wrapped, generation 1 destroyed.
        d.sc("ca", "revoke", "--serial", serial["vic-ec"], "--reason", "keyCompromise")
        # The RSA victim's key now sits re-wrapped under generation 2: carve
        # that copy too (the live file and a second backup).
        b2 = keys_db(d)[kid["vic-rsa"]]
        check(b2 != blobs[kid["vic-rsa"]] and key_of(d, "vic-rsa")["key_group_generation"] == 2,
              "the first revocation re-wrapped the RSA victim's key under generation 2")
        backup2 = os.path.join(d.tmp, "backup2")
        d.sc("store", "backup", backup2)
        gen2 = carve_out(d, b2, (("live", live), ("backup2", os.path.join(backup2, "store", "data.mdb"))),
                         "vic-rsa-gen2")
        files.update(dict.fromkeys(gen2, "vic-rsa"))
        check(len(gen2) >= 2, f"its generation-2 blob carved from the live file and a backup ({len(gen2)})")
        # Revoke the RSA victim with a CLI that dies right after its commit.
        env = dict(d.env)
        env["SMARTCERT_TEST_DIE_AFTER_COMMIT"] = "1"
        r = d.sc("ca", "revoke", "--serial", serial["vic-rsa"], "--reason", "keyCompromise",
                 check=False, env=env)
        check(r.returncode != 0, f"the test hook killed the CLI after its commit ({r.returncode})")
        c = d.sc_json("ca", "show", "--serial", serial["vic-rsa"])
        check(c["status"] == "revoked", "the revocation it committed stands")
        shown = d.sc_json("ca", "show", "--user", "oth-ec")
        pend = shown.get("key_destruction_pending") or {}
        check(pend.get("old_group_keys") == 1 and pend.get("due"),
              f"ca show reports the destruction still owed, with its deadline ({pend})")
        text = d.sc("ca", "show", "--user", "oth-ec").stdout
        check("key destruction pending: 1 old group key" in text, "... in its text output too")
        mid = probe(d, sorted(gen2))
        check(len(mid["unwrapped"]) == len(gen2) and
              all(lbl == "smartcert-kg-00000000-2" for _, lbl in mid["unwrapped"]),
              "until then generation 2 still exists (it still unwraps the generation-2 copies)")
        # The next CA command that writes (here the hourly sweep) finishes it.
        d.sc("ca", "sweep")
        shown = d.sc_json("ca", "show", "--user", "oth-ec")
        check("key_destruction_pending" not in shown, "the next CA command finished the destruction")

        # Now every carved copy, and the copies the live file holds now.
        for u in victims:
            files.update(dict.fromkeys(carve_out(d, blobs[kid[u]], (("live-after", live),), u), u))
        after = probe(d, sorted(files))
        check(after["secret_keys"] >= 4 and "smartcert-kg-00000000-3" in after["labels"] and
              not any(lbl.startswith("smartcert-kg-00000000-") and lbl != "smartcert-kg-00000000-3"
                      for lbl in after["labels"]),
              f"the token holds generation 3 and no older one ({after['labels']})")
        check(after["unwrapped"] == [],
              f"no copy of either revoked key ({len(files)} carved, live and backup) unwraps with "
              f"any of the {after['secret_keys']} secret keys on the token")

        # The rest of the group still signs, under the new generation.
        for u in others:
            k = key_of(d, u)
            check(k["key_group_generation"] == 3 and k["blob_present"],
                  f"{u}'s key was re-wrapped twice (generation {k['key_group_generation']})")
            ok, err = signs(d, u)
            check(ok, f"{u} still signs through the service ({err[:200]})")
        rot = [e for e in d.audit() if e.get("kind") == "keygroup-rotate"]
        check(len(rot) == 2, f"two keygroup-rotate audit records ({len(rot)})")

        # Renewal with a new key destroys the old one the same way; with
        # --keep-key nothing is destroyed and the group is left alone.
        old_kid = kid["oth-ec"]
        ob = keys_db(d)[old_kid]
        name = os.path.join(d.tmp, "oth-ec-gen3.blob")
        with open(name, "wb") as g:
            g.write(ob)
        cert = d.sc_json("ca", "show", "--user", "oth-ec")["certificates"][0]["serial"]
        tok = d.sc("authz", "issue", "--user", "oth-ec", "--key", old_kid, "--purpose", "renew",
                   "--serial", cert).stdout.strip()
        n = json.loads(d.sc("ca", "renew", "--user", "oth-ec", "--consent", tok, "--json").stdout)
        check(n["key_id"] != old_kid, "renew without --keep-key: a new key")
        after = probe(d, [name])
        check(after["unwrapped"] == [] and "smartcert-kg-00000000-4" in after["labels"],
              "the renewed-away key's blob unwraps with nothing left on the token (generation 4 now)")
        tok = d.sc("authz", "issue", "--user", "oth-rsa", "--key", kid["oth-rsa"], "--purpose", "renew",
                   "--serial", serial["oth-rsa"]).stdout.strip()
        d.sc("ca", "renew", "--user", "oth-rsa", "--consent", tok, "--keep-key")
        rot = [e for e in d.audit() if e.get("kind") == "keygroup-rotate"]
        check(len(rot) == 3, f"--keep-key re-wraps nothing: still three keygroup-rotate records ({len(rot)})")
        for u in others:
            ok, err = signs(d, u)
            check(ok, f"{u} signs after the renewals ({err[:200]})")
        r = d.sc("store", "check", check=False)
        check(r.returncode == 0, f"store check passes ({r.stdout.strip()[-200:]})")

        # What a destruction leaves is bound too: the renewed-away key's
        # record, its blob gone, edited by the store's owner (a byte of its
        # public key flipped) fails `store check`, and passes once put back.
        check(keys_db(d)[old_kid] == b"", "the renewed-away key's record holds no blob")
        store = os.path.join(d.dir, "store")
        dump = subprocess.run(["mdb_dump", "-s", "keys", store], capture_output=True,
                              text=True, check=True).stdout.splitlines()
        end = dump.index("HEADER=END")
        at = dump.index(" " + old_kid.encode().hex(), end + 1) + 1
        rec = bytearray.fromhex(dump[at].strip())
        pos = rec.find(bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107"))
        check(pos > 0, "the destroyed key's record keeps its P-256 public key")
        rec[pos + 40] ^= 0xff

        def load(value):
            subprocess.run(["mdb_load", "-s", "keys", store], text=True, check=True,
                           input="\n".join(dump[:end + 1] + [dump[at - 1], " " + value, "DATA=END"]) + "\n")

        load(rec.hex())
        r = d.sc("store", "check", check=False)
        check(r.returncode == 8 and f"fail their binding MAC (first: {old_kid})" in r.stdout,
              f"store check names the edited destroyed key (exit {r.returncode}): {r.stdout.strip()[-300:]}")
        load(dump[at].strip())
        r = d.sc("store", "check", check=False)
        check(r.returncode == 0, f"put back, store check passes ({r.stdout.strip()[-200:]})")


if __name__ == "__main__":
    main()
