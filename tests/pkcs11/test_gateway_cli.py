#!/usr/bin/python3
"""`smartcert sign`, the reference gateway client: a detached CMS SignedData
that `openssl cms -verify` accepts with the deployment's chain, for every
mechanism it offers; the two-step flow (--print-digest, an approval from
`smartcert authz issue`, then --token); refusals with clear messages."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check, fail, skip_unless  # noqa: E402

skip_unless("openssl")


def cms_verify(d, doc, sig, purpose_any=False):
    cmd = ["openssl", "cms", "-verify", "-binary", "-content", doc, "-inform", "DER", "-in", sig,
           "-CAfile", os.path.join(d.dir, "ca", "chain.pem"), "-out", os.devnull]
    if purpose_any:
        cmd += ["-purpose", "any"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode == 0 and "Verification successful" in r.stderr, r.stderr


def main():
    with Deployment(prefix="gw-cli-") as d:
        d.enrol("alice", "p256")
        d.enrol("bob", "rsa2048")
        doc = os.path.join(d.tmp, "contract.txt")
        with open(doc, "wb") as f:
            f.write(b"I agree to the terms.\r\n" * 100 + bytes(range(256)))

        # --authorize, default output path and mechanism.
        r = d.sc("sign", "--user", "alice", "--in", doc, "--authorize")
        check("signed" in r.stdout and "alice" in r.stdout, "sign --authorize prints a summary")
        ok, err = cms_verify(d, doc, doc + ".p7s")
        check(ok, f"openssl cms -verify accepts {os.path.basename(doc)}.p7s ({err.strip()[:200]})")
        ok, _ = cms_verify(d, doc, doc + ".p7s", purpose_any=True)
        check(ok, "and with -purpose any")

        # The CMS carries what a relying party needs.
        r = subprocess.run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", doc + ".p7s"],
                           capture_output=True, text=True)
        check(r.returncode == 0 and "signingTime" in r.stdout and "messageDigest" in r.stdout
              and "contentType" in r.stdout, "signed attributes: contentType, signingTime, messageDigest")
        check("eContent: <ABSENT>" in r.stdout, "detached: no encapsulated content")

        # A changed document does not verify.
        bad = os.path.join(d.tmp, "tampered.txt")
        with open(doc, "rb") as f, open(bad, "wb") as g:
            data = bytearray(f.read())
            data[10] ^= 0x20
            g.write(data)
        ok, _ = cms_verify(d, bad, doc + ".p7s")
        check(not ok, "the signature does not verify a tampered document")

        # Every mechanism, with --json.
        for user, mechs in (("alice", ["ecdsa", "ecdsa-sha256"]),
                            ("bob", ["rsa-pkcs", "sha256-rsa-pkcs", "rsa-pss", "sha256-rsa-pss"])):
            for m in mechs:
                out = os.path.join(d.tmp, f"{user}-{m}.p7s")
                r = d.sc("sign", "--user", user, "--in", doc, "--authorize", "--mechanism", m,
                         "--out", out, "--json")
                j = json.loads(r.stdout)
                check(j["user"] == user and j["mechanism"] == m and j["out"] == out and len(j["digest"]) == 64,
                      f"{m}: --json summary")
                ok, err = cms_verify(d, doc, out)
                check(ok, f"{m}: openssl cms -verify accepts the signature ({err.strip()[:200]})")
        r = d.sc("sign", "--user", "alice", "--in", doc, "--authorize", "--hash", "sha384",
                 "--out", os.path.join(d.tmp, "a384.p7s"))
        check(cms_verify(d, doc, os.path.join(d.tmp, "a384.p7s"))[0], "ecdsa with --hash sha384 verifies")

        # Two steps: the gateway prints the digest, the authorisation service
        # approves it, the gateway signs with that token.
        j = json.loads(d.sc("sign", "--user", "alice", "--in", doc, "--print-digest", "--json").stdout)
        check(len(j["digest"]) == 64 and j["key_id"] and j["signing_time"] > 0, "--print-digest --json")
        again = json.loads(d.sc("sign", "--in", doc, "--print-digest", "--json",
                                "--signing-time", str(j["signing_time"])).stdout)
        check(again["digest"] == j["digest"], "the digest depends only on the file and the signing time")
        token = d.sc("authz", "issue", "--user", "alice", "--key", j["key_id"], "--digest", j["digest"]).stdout.strip()
        out = os.path.join(d.tmp, "two-step.p7s")
        r = d.sc("sign", "--user", "alice", "--in", doc, "--signing-time", str(j["signing_time"]),
                 "--token", token, "--out", out, check=False)
        check(r.returncode == 0, f"sign --token with the approved digest ({r.stderr.strip()})")
        check(cms_verify(d, doc, out)[0], "two-step signature verifies")
        tf = os.path.join(d.tmp, "token.txt")
        with open(tf, "w") as f:
            f.write(token + "\n")
        r = d.sc("sign", "--user", "alice", "--in", doc, "--signing-time", str(j["signing_time"]),
                 "--token", "@" + tf, "--out", out, check=False)
        check(r.returncode == 4 and "CKR_PIN_EXPIRED" in r.stderr and "already used" in r.stderr,
              f"the same token again (read from @file) is refused as used ({r.stderr.strip()[:160]})")

        # The token on standard input (keeps it out of the process list).
        j = json.loads(d.sc("sign", "--user", "alice", "--in", doc, "--print-digest", "--json",
                            "--mechanism", "ecdsa-sha256").stdout)
        token = d.sc("authz", "issue", "--user", "alice", "--key", j["key_id"], "--digest", j["digest"]).stdout
        r = d.sc("sign", "--user", "alice", "--in", doc, "--signing-time", str(j["signing_time"]),
                 "--mechanism", "ecdsa-sha256", "--token", "-", "--out", out, input=token, check=False)
        check(r.returncode == 0 and cms_verify(d, doc, out)[0], "--token - reads the token from stdin")

        # A token for another digest: refused at C_Sign with a clear message.
        other = d.sc("sign", "--in", bad, "--print-digest", "--signing-time", "1790000000").stdout.strip()
        token = d.sc("authz", "issue", "--user", "alice", "--key", j["key_id"], "--digest", other).stdout.strip()
        r = d.sc("sign", "--user", "alice", "--in", doc, "--token", token, "--out", out, check=False)
        check(r.returncode == 4, f"a token for another digest: exit 4 (got {r.returncode})")
        check("CKR_FUNCTION_REJECTED" in r.stderr and "does not list this digest" in r.stderr,
              f"... and the message says why: {r.stderr.strip().splitlines()[0] if r.stderr.strip() else ''}")
        check("the digest to authorise is sha256:" in r.stderr, "... and names the digest to approve")

        # Another user's token; no token; usage errors; unknown user.
        token = d.sc("authz", "issue", "--user", "bob", "--key", "kwhatever", "--digest", other).stdout.strip()
        r = d.sc("sign", "--user", "alice", "--in", doc, "--token", token, "--out", out, check=False)
        check(r.returncode == 4 and "CKR_PIN_INCORRECT" in r.stderr, "another user's token: CKR_PIN_INCORRECT")
        r = d.sc("sign", "--user", "alice", "--in", doc, check=False)
        check(r.returncode == 2 and "--token" in r.stderr, "neither --token nor --authorize: usage error")
        r = d.sc("sign", "--user", "alice", "--in", doc, "--authorize", "--mechanism", "rsa-pss", check=False)
        check(r.returncode == 2 and "does not fit" in r.stderr, "an RSA mechanism on an EC key: usage error")
        r = d.sc("sign", "--user", "nobody", "--in", doc, "--authorize", check=False)
        check(r.returncode == 3 and "no signing key" in r.stderr, "unknown user: exit 3, no signing key")
        r = d.sc("sign", "--user", "alice", "--in", os.path.join(d.tmp, "missing"), "--authorize", check=False)
        check(r.returncode != 0 and "missing" in r.stderr, "missing input file: clear error")

        # The module is found through --module too, and a wrong path says so.
        r = d.sc("sign", "--user", "alice", "--in", doc, "--authorize", "--module",
                 os.path.join(d.tmp, "nope.so"), check=False)
        check(r.returncode == 6 and "cannot load the PKCS#11 module" in r.stderr, "a wrong --module: exit 6")
        if d.module:
            r = d.sc("sign", "--user", "alice", "--in", doc, "--authorize", "--module", d.module,
                     "--out", out, check=False)
            check(r.returncode == 0, "--module PATH")

        # Wrong gateway PIN through --gateway-pin-source env:VAR.
        env = dict(d.env, GW_PIN="not-the-pin")
        r = d.sc("sign", "--user", "alice", "--in", doc, "--authorize", "--gateway-pin-source", "env:GW_PIN",
                 env=env, check=False)
        check(r.returncode == 4 and "C_Login(CKU_USER)" in r.stderr and "gateway PIN" in r.stderr,
              "wrong gateway PIN: clear message")
        env = dict(d.env, GW_PIN=d.gateway_pin)
        r = d.sc("sign", "--user", "alice", "--in", doc, "--authorize", "--gateway-pin-source", "env:GW_PIN",
                 "--out", out, env=env, check=False)
        check(r.returncode == 0, "--gateway-pin-source env:VAR")

        # The audit log has the signatures the CLI made.
        recs = d.audit("alice")
        check(sum(1 for x in recs if x.get("kind") == "sign" and x.get("outcome") == "ok") >= 4,
              "audit: the signatures are recorded")


if __name__ == "__main__":
    main()
