#!/usr/bin/env python3
"""Lifecycle rules: suspend/resume/revoke/renew transitions with their exit
codes, renewal consent (missing, wrong, replayed), key destruction on
revocation, re-init refusal, and no plaintext ID-card number anywhere in
the deployment directory."""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import SMARTCERT, Deployment, check, need_test_hooks  # noqa: E402

need_test_hooks()

EXIT_USAGE, EXIT_NOT_FOUND, EXIT_STATE = 2, 3, 4

with Deployment() as d:
    # re-running init on the deployment refuses and changes nothing
    conf_before = open(d.config).read()
    r = subprocess.run([SMARTCERT, "init", "--dir", d.dir], env=d.env, capture_output=True, text=True)
    check(r.returncode != 0 and "already" in r.stderr, f"re-init refused: {r.stderr.strip()}")
    check(open(d.config).read() == conf_before, "re-init changed nothing")

    env = dict(d.env, IDA="Z6839217", IDB="(X1234563)", IDC="W7777777")
    a = json.loads(d.sc("ca", "enrol", "--user", "alice", "--name", "Alice", "--id-number-source",
                        "env:IDA", "--json", env=env).stdout)
    r = d.sc("ca", "enrol", "--user", "alice", "--name", "Alice", "--id-number-source", "env:IDC",
             check=False, env=env)
    check(r.returncode == EXIT_STATE and "already" in r.stderr, "duplicate user id refused")
    r = d.sc("ca", "enrol", "--user", "alice-2", "--name", "Alice", "--id-number-source", "-",
             input="z 683 9217\n", check=False, env=env)
    check(r.returncode == EXIT_STATE and "same ID-card number" in r.stderr,
          "same person (normalised number from stdin) refused")
    r = d.sc("ca", "enrol", "--user", "nobody", "--name", "N", check=False)
    check(r.returncode != 0 and "id-number-source" in r.stderr, "ID number is required, never from argv")

    # suspend / resume
    d.sc("ca", "suspend", "--user", "alice")
    show = d.sc_json("ca", "show", "--user", "alice")
    check(show["status"] == "suspended" and show["certificates"][0]["status"] == "hold",
          "suspend puts the certificate on hold")
    r = d.sc("ca", "suspend", "--user", "alice", check=False)
    check(r.returncode == EXIT_STATE and "already suspended" in r.stderr, "no suspend of a suspended user")
    d.sc("ca", "resume", "--user", "alice")
    show = d.sc_json("ca", "show", "--user", "alice")
    check(show["status"] == "active" and show["certificates"][0]["status"] == "good", "resume releases the hold")
    r = d.sc("ca", "resume", "--user", "alice", check=False)
    check(r.returncode == EXIT_STATE, "no resume of an active user")
    r = d.sc("ca", "suspend", "--user", "ghost", check=False)
    check(r.returncode == EXIT_NOT_FOUND, "unknown user: not found")

    # renewal with consent
    key, serial = a["key_id"], a["serial"]
    r = d.sc("ca", "renew", "--user", "alice", check=False)
    check(r.returncode == EXIT_USAGE, "renew without consent refused")
    tok_other = d.sc("authz", "issue", "--user", "alice", "--key", key, "--purpose", "renew",
                     "--serial", "0badc0de").stdout.strip()
    r = d.sc("ca", "renew", "--user", "alice", "--consent", tok_other, check=False)
    check(r.returncode != 0 and "not for renewing" in r.stderr, "consent for another certificate refused")
    tok_sign = d.sc("authz", "issue", "--user", "alice", "--key", key, "--digest", "00" * 32).stdout.strip()
    r = d.sc("ca", "renew", "--user", "alice", "--consent", tok_sign, check=False)
    check(r.returncode != 0 and "renew" in r.stderr, "a signing token is not a renewal consent")
    tok_bob = d.sc("authz", "issue", "--user", "bob", "--key", key, "--purpose", "renew",
                   "--serial", serial).stdout.strip()
    r = d.sc("ca", "renew", "--user", "alice", "--consent", tok_bob, check=False)
    check(r.returncode != 0 and "bob" in r.stderr, "consent of another user refused")
    tok = d.sc("authz", "issue", "--user", "alice", "--key", key, "--purpose", "renew",
               "--serial", serial).stdout.strip()
    n = json.loads(d.sc("ca", "renew", "--user", "alice", "--consent", tok, "--json").stdout)
    check(n["serial"] != serial and n["key_id"] != key, "renew: new certificate and new key")
    show = d.sc_json("ca", "show", "--user", "alice")
    old = [c for c in show["certificates"] if c["serial"] == serial][0]
    check(old["status"] == "revoked" and old["reason"] == "superseded", "old certificate superseded")
    oldk = [k for k in show["keys"] if k["key_id"] == key][0]
    check(not oldk["blob_present"] and oldk["state"] != "active", "old key destroyed")
    r = d.sc("ca", "renew", "--user", "alice", "--consent", tok, check=False)
    check(r.returncode != 0 and "already used" in r.stderr, "replayed consent refused")
    audit = d.sc_json("audit", "show", "--kind", "renew")
    check(len(audit) == 1 and audit[0]["token_id"], "renew audit record names the consent token id")
    tok2 = d.sc("authz", "issue", "--user", "alice", "--key", n["key_id"], "--purpose", "renew",
                "--serial", n["serial"]).stdout.strip()
    k = json.loads(d.sc("ca", "renew", "--user", "alice", "--consent", tok2, "--keep-key",
                        "--json").stdout)
    check(k["key_id"] == n["key_id"] and k["serial"] != n["serial"], "--keep-key keeps the key")
    show = d.sc_json("ca", "show", "--user", "alice")
    kk = [x for x in show["keys"] if x["key_id"] == n["key_id"]][0]
    check(kk["blob_present"] and kk["cert_serial"] == k["serial"], "kept key points at the new certificate")

    # no renewal after expiry (clock moved past notAfter)
    b = json.loads(d.sc("ca", "enrol", "--user", "bob", "--name", "Bob", "--id-number-source",
                        "env:IDB", "--json", env=env).stdout)
    import calendar, time
    na = calendar.timegm(time.strptime(b["not_after"], "%Y-%m-%dT%H:%M:%SZ"))
    late = dict(env, SMARTCERT_FAKE_TIME=str(na + 10))
    tokb = d.sc("authz", "issue", "--user", "bob", "--key", b["key_id"], "--purpose", "renew",
                "--serial", b["serial"], env=late).stdout.strip()
    r = d.sc("ca", "renew", "--user", "bob", "--consent", tokb, check=False, env=late)
    check(r.returncode == EXIT_STATE and "expired" in r.stderr and "before expiry" in r.stderr,
          f"renewal after expiry refused ({r.returncode}): {r.stderr.strip()}")

    # revoke: key destroyed, account closed, no double revoke, no resume
    r = d.sc("ca", "revoke", "--serial", b["serial"], "--reason", "nosuchreason", check=False)
    check(r.returncode == EXIT_USAGE, "unknown reason refused")
    r = d.sc("ca", "revoke", "--serial", b["serial"], "--reason", "certificateHold", check=False)
    check(r.returncode == EXIT_USAGE, "certificateHold only through suspend")
    # RFC 5280 §5.3.2: an invalidity date is when the key was known or
    # suspected compromised, never a date to come
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    for args in (["--serial", b["serial"]], ["--user", "bob"]):
        for when in ("2030-01-01T00:00:00Z", future):
            r = d.sc("ca", "revoke", *args, "--reason", "keyCompromise",
                     "--invalidity-date", when, check=False)
            check(r.returncode == EXIT_USAGE and "in the future" in r.stderr and
                  r.stderr.count("\n") == 1,
                  f"revoke {args[0]} with invalidity date {when} refused: {r.stderr.strip()}")
    check(d.sc_json("ca", "show", "--user", "bob")["certificates"][0]["status"] == "good",
          "nothing revoked by the refused attempts")
    d.sc("ca", "revoke", "--serial", b["serial"], "--reason", "keyCompromise",
         "--invalidity-date", "2026-01-02T03:04:05Z")
    show = d.sc_json("ca", "show", "--user", "bob")
    check(show["status"] == "closed", "revoking the only certificate closes the account")
    check(not show["keys"][0]["blob_present"] and show["keys"][0]["state"] == "destroyed",
          "revocation destroys the wrapped key")
    c = show["certificates"][0]
    check(c["reason"] == "keyCompromise" and c["invalidity_date"] == "2026-01-02T03:04:05Z",
          "keyCompromise with invalidityDate recorded")
    r = d.sc("ca", "revoke", "--serial", b["serial"], "--reason", "keyCompromise", check=False)
    check(r.returncode == EXIT_STATE and "already revoked" in r.stderr, "no double revoke")
    r = d.sc("ca", "resume", "--user", "bob", check=False)
    check(r.returncode == EXIT_STATE and "closed" in r.stderr, "no resume of a closed user")
    r = d.sc("ca", "revoke", "--serial", "01", "--reason", "unspecified", check=False)
    check(r.returncode == EXIT_NOT_FOUND, "unknown serial: not found")
    r = d.sc("ca", "revoke", "--user", "bob", "--reason", "unspecified", check=False)
    check(r.returncode == EXIT_STATE and "no certificate left" in r.stderr, "no revoke of a closed user")

    # a closed account is enrolled again under its own user id only
    r = d.sc("ca", "enrol", "--user", "bob2", "--name", "Bob", "--id-number-source", "env:IDB",
             check=False, env=env)
    check(r.returncode == EXIT_STATE and "user bob" in r.stderr and "closed" in r.stderr,
          f"the same person under another id refused: {r.stderr.strip()}")
    b2 = json.loads(d.sc("ca", "enrol", "--user", "bob", "--name", "Bob", "--id-number-source",
                         "env:IDB", "--json", env=env).stdout)
    show = d.sc_json("ca", "show", "--user", "bob")
    check(show["status"] == "active" and b2["key_id"] != b["key_id"]
          and [c["status"] for c in show["certificates"] if c["serial"] == b2["serial"]] == ["good"],
          "closed account enrolled again: active, new key and certificate")
    check("reopened" in d.sc_json("audit", "show", "--user", "bob", "--kind", "enrol")[-1]["detail"],
          "re-enrolment audited as reopened")

    # suspension policy: with ca.suspend_holds = no the account is suspended
    # but its certificate stays good in CRL/OCSP
    d.conf_set("ca.suspend_holds", "no")
    s = d.sc_json("ca", "suspend", "--user", "bob")
    c = [x for x in d.sc_json("ca", "show", "--user", "bob")["certificates"] if x["serial"] == b2["serial"]][0]
    check(s["held"] == 0 and c["status"] == "good", "suspend_holds=no: certificate not put on hold")
    d.sc("ca", "resume", "--user", "bob")
    d.conf_set("ca.suspend_holds", "yes")
    s = d.sc_json("ca", "suspend", "--user", "bob")
    c = d.sc_json("ca", "show", "--serial", b2["serial"])
    check(s["held"] == 1 and c["status"] == "hold" and c["reason"] == "certificateHold",
          "suspend_holds=yes: certificate on hold")
    r = d.sc_json("ca", "resume", "--user", "bob")
    check(r["released"] == 1 and d.sc_json("ca", "show", "--serial", b2["serial"])["status"] == "good",
          "resume releases the hold")

    d.sc("ca", "revoke", "--user", "alice", "--reason", "cessationOfOperation")
    check(d.sc_json("ca", "show", "--user", "alice")["status"] == "closed", "revoke --user closes")
    rerun = os.path.join(d.tmp, "old-batch.csv")
    with open(rerun, "w") as f:
        f.write("user_id,name,id_number\nalice,Alice,Z6839217\n")
    res = json.loads(d.sc("ca", "enrol", "--batch", rerun, "--json").stdout)
    check(res["skipped"] == 1 and res["enrolled"] == 0
          and d.sc_json("ca", "show", "--user", "alice")["status"] == "closed",
          "a batch never reopens a closed account")
    lst = d.sc_json("ca", "list", "--status", "revoked")
    check(len(lst) == 4, f"list --status revoked: {len(lst)}")
    check(len(d.sc_json("ca", "list", "--user", "alice", "--limit", "1")) == 1, "list --limit")

    # sweep: a minor who comes of age is revoked (privilegeWithdrawn)
    import datetime
    dob = (datetime.date.today() - datetime.timedelta(days=365 * 17 + 100)).isoformat()
    m = json.loads(d.sc("ca", "enrol", "--user", "kid", "--name", "Kid", "--id-number-source",
                        "env:IDC", "--profile", "minor", "--dob", dob, "--json", env=env).stdout)
    adult = dict(env, SMARTCERT_FAKE_TIME=str(int(time.time()) + 400 * 86400))
    sw = json.loads(d.sc("ca", "sweep", "--json", env=adult).stdout)
    check(sw["minors_revoked"] == 1, f"sweep revokes the minor who turned 18: {sw}")
    c = d.sc_json("ca", "show", "--serial", m["serial"])
    check(c["status"] == "revoked" and c["reason"] == "privilegeWithdrawn", "reason privilegeWithdrawn")

    # sweep purges a closed account only once it is closed and every one of
    # its certificates ended more than ca.retention_days ago
    import glob
    from cryptography import x509
    PAT = "Quintessa Purgeable-Holder"
    envp = dict(env, IDP="P5550001")
    p = json.loads(d.sc("ca", "enrol", "--user", "pat", "--name", PAT, "--id-number-source",
                        "env:IDP", "--json", env=envp).stdout)
    # pat's key record, wrapped key included, before the revocation deletes it
    keys_dump = subprocess.run(["mdb_dump", "-s", "keys", os.path.join(d.dir, "store")],
                               capture_output=True, text=True, check=True).stdout.split("\n")
    kline = keys_dump.index(" " + p["key_id"].encode().hex())
    pat_key = bytes.fromhex(keys_dump[kline + 1].strip())
    d.sc("ca", "revoke", "--user", "pat", "--reason", "cessationOfOperation")
    crl_out = os.path.join(d.tmp, "crl-purge")
    d.sc("crl", "publish", "--out", crl_out)   # the revocation is on a base CRL before the purge
    retention = 2555
    closed_only = dict(env, SMARTCERT_FAKE_TIME=str(int(time.time()) + (retention + 45) * 86400))
    sw = json.loads(d.sc("ca", "sweep", "--json", env=closed_only).stdout)
    check(sw["purged"] == 0 and sw["expired"] >= 1,
          f"closed past retention but certificates not ended past retention: kept {sw}")
    check(d.sc_json("ca", "show", "--user", "pat")["status"] == "closed", "pat still there")
    ends = [calendar.timegm(time.strptime(c["not_after"], "%Y-%m-%dT%H:%M:%SZ"))
            for u in ("pat", "alice", "kid") for c in d.sc_json("ca", "show", "--user", u)["certificates"]]
    late = dict(env, SMARTCERT_FAKE_TIME=str(max(ends) + (retention + 2) * 86400))
    sw = json.loads(d.sc("ca", "sweep", "--json", env=late).stdout)
    check(sw["purged"] == 3, f"sweep deletes the closed accounts past retention (pat, alice, kid): {sw}")
    for u in ("pat", "alice", "kid"):
        r = d.sc("ca", "show", "--user", u, check=False)
        check(r.returncode == EXIT_NOT_FOUND, f"purged account {u}: not found ({r.returncode})")
    r = d.sc("ca", "show", "--serial", p["serial"], check=False)
    check(r.returncode == EXIT_NOT_FOUND, "purged certificate: not found")
    check(d.sc_json("ca", "show", "--user", "bob")["status"] == "active", "active account kept")
    purges = d.sc_json("audit", "show", "--kind", "purge")
    check(sorted(x["user"] for x in purges) == ["alice", "kid", "pat"]
          and not any(PAT in json.dumps(x) for x in purges), f"purge audited, no personal data: {purges}")
    # LMDB frees pages but does not overwrite them: the name may still sit in
    # free pages of data.mdb until they are reused.  The documented
    # compaction (docs/privacy.md: store backup, then store restore) leaves
    # the live file with live data only.
    store = os.path.join(d.dir, "store")
    raw = open(os.path.join(store, "data.mdb"), "rb").read()
    print(f"note: before compaction, the name is in free pages of data.mdb: {PAT.encode() in raw}")
    compact = os.path.join(d.tmp, "compact")
    d.sc("store", "backup", compact, env=late)
    d.sc("store", "restore", "--from", compact, "--confirm-rollback", env=late)
    live = open(os.path.join(store, "data.mdb"), "rb").read()
    blob_slice = pat_key[len(pat_key) // 3: len(pat_key) // 3 + 48]
    check(PAT.encode() not in live and b"Alice" not in live and b"pat" in live,
          "after the purge and its compaction no purged holder's name is in the live store")
    check(blob_slice not in live and pat_key not in live,
          "... nor the purged holder's key record, wrapped key included")
    for old in glob.glob(store + ".replaced-*"):
        shutil.rmtree(old)    # the store the restore put aside (docs/privacy.md)
    d.sc("crl", "publish", "--out", crl_out, env=late)
    listed = set()
    for f in glob.glob(os.path.join(crl_out, "*.crl")):
        listed |= {format(e.serial_number, "x") for e in x509.load_der_x509_crl(open(f, "rb").read())}
    check(glob.glob(os.path.join(crl_out, "*.crl")) and p["serial"].lower().lstrip("0") not in listed,
          "CRLs published after the purge; the purged serial is on none")
    sw = json.loads(d.sc("ca", "sweep", "--json", env=late).stdout)
    check(sw == {"expired": 0, "minors_revoked": 0, "purged": 0, "replay_purged": 0}, f"a second sweep finds nothing: {sw}")
    p2 = json.loads(d.sc("ca", "enrol", "--user", "pat", "--name", PAT, "--id-number-source",
                         "env:IDP", "--json", env=dict(envp, SMARTCERT_FAKE_TIME=late["SMARTCERT_FAKE_TIME"])).stdout)
    show = d.sc_json("ca", "show", "--user", "pat")
    check(show["status"] == "active" and p2["serial"] != p["serial"]
          and [c["serial"] for c in show["certificates"]] == [p2["serial"]],
          "the same person enrols afresh after the purge")

    r = d.sc("audit", "verify", "--json")
    check(json.loads(r.stdout)["ok"], "audit chain verifies")

    # no plaintext ID-card number anywhere under the deployment
    needles = [b"Z6839217", b"X1234563", b"W7777777", b"z 683 9217", b"6839217", b"P5550001"]
    hits = []
    for root, _, files in os.walk(d.dir):
        for f in files:
            p = os.path.join(root, f)
            try:
                data = open(p, "rb").read()
            except OSError:
                continue
            for n_ in needles:
                if n_ in data or n_.lower() in data:
                    hits.append((p, n_))
    check(not hits, f"no ID-card number in any file under the deployment {hits}")
    secrets = [open(d.info[k]).read().strip().encode()
               for k in ("backend_pin_file", "gateway_pin_file", "so_pin_file")
               if d.info[k] is not None]   # NSS has no SO PIN
    store = os.path.join(d.dir, "store")
    leaks = [(f, i) for f in os.listdir(store) for i, sec in enumerate(secrets)
             if sec in open(os.path.join(store, f), "rb").read()]
    check(all(len(x) >= 8 for x in secrets) and not leaks, f"no PIN in the store or audit {leaks}")
    out = d.sc("audit", "show", "--json").stdout + d.sc("ca", "list", "--json").stdout
    check(not any(n_.decode() in out for n_ in needles), "nor in any output")
print("PASS")
