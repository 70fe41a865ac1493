#!/usr/bin/python3
"""`smartcert authz` end to end: keygen, issue, show --json, verify, and an
independent check of the token with the openssl CLI and python3-cryptography
(the TBS bytes are cut out with `openssl asn1parse`, the signature verified
by cryptography), so the format is what docs/token-format.md says and not
only what our own decoder accepts."""
import base64
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import check, fail, skip_unless, need_test_hooks  # noqa: E402

need_test_hooks()

skip_unless("openssl")
try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
except ImportError:
    print("SKIP: python3-cryptography is not installed", file=sys.stderr)
    sys.exit(77)

SMARTCERT = os.environ.get("SMARTCERT_BIN", "smartcert")
BUILDDIR = os.environ.get("SMARTCERT_BUILDDIR", os.getcwd())
NOW = 1795000000


def run(args, env, input=None):
    return subprocess.run([SMARTCERT, *args], env=env, capture_output=True, text=True,
                          input=input, timeout=120)


def ok(args, env, input=None):
    r = run(args, env, input)
    if r.returncode != 0:
        fail(f"smartcert {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r


def b64u_decode(t):
    return base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))


def der_parts(der, tmp):
    """(tbs bytes, signature algorithm DER, signature bytes) by openssl asn1parse."""
    path = os.path.join(tmp, "token.der")
    with open(path, "wb") as f:
        f.write(der)
    out = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", path],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+):d=(\d+)\s+hl=(\d+)\s+l=\s*(\d+)\s+(prim|cons):\s*(.*)", line)
        if m:
            rows.append(tuple(int(x) for x in m.groups()[:4]) + (m.group(6).strip(),))
    top = [r for r in rows if r[1] == 1]
    if len(top) != 3:
        fail(f"token is not SEQUENCE {{ tbs, algorithm, signature }}: {out}")
    (o1, _, h1, l1, _), (o2, _, h2, l2, _), (o3, _, h3, l3, t3) = top
    if not t3.startswith("BIT STRING") or der[o3 + h3] != 0:
        fail("signature is not a BIT STRING with no unused bits")
    return der[o1:o1 + h1 + l1], der[o2:o2 + h2 + l2], der[o3 + h3 + 1:o3 + h3 + l3]


def main():
    base = os.path.join(BUILDDIR, "test-tmp")
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="authz-cli-", dir=base)
    try:
        env = dict(os.environ)
        env.pop("SMARTCERT_CONF", None)
        env.pop("SOFTHSM2_CONF", None)
        env["SMARTCERT_FAKE_TIME"] = str(NOW)

        # keygen: one key per type; private key 0600; printed id = SHA-256(SPKI).
        keys = {}
        for t in ("ec", "ed25519", "rsa-pss"):
            priv = os.path.join(tmp, f"{t}.key.pem")
            pub = os.path.join(tmp, f"{t}.pub.pem")
            r = ok(["authz", "keygen", "--type", t, "--out", priv, "--pub", pub], env)
            kid = r.stdout.strip()
            check(stat.S_IMODE(os.stat(priv).st_mode) == 0o600, f"{t}: private key is mode 0600")
            with open(pub, "rb") as f:
                pubkey = serialization.load_pem_public_key(f.read())
            spki = pubkey.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
            check(kid == hashlib.sha256(spki).hexdigest(), f"{t}: key id is SHA-256 of the SPKI")
            keys[t] = (priv, pub, pubkey, kid)
        r = run(["authz", "keygen", "--out", keys["ec"][0]], env)
        check(r.returncode != 0 and "exists" in r.stderr, "keygen does not overwrite a key")

        conf = os.path.join(tmp, "smartcert.conf")
        with open(conf, "w") as f:
            f.write("[authz]\nissuer = test-authz\naudience = test-signing\nmax_skew = 60\n"
                    f"demo_key = {keys['ec'][0]}\n"
                    "trusted_key = ec.pub.pem\ntrusted_key = ed25519.pub.pem\n"
                    "trusted_key = rsa-pss.pub.pem\n")
        cenv = dict(env, SMARTCERT_CONF=conf)

        digest = hashlib.sha256(b"a contract").hexdigest()
        for t in ("ec", "ed25519", "rsa-pss"):
            priv, pub, pubkey, kid = keys[t]
            tok = ok(["authz", "issue", "--user", "alice", "--key", "alice-k1", "--digest", digest,
                      "--signing-key", priv, "--max-signatures", "2"], cenv).stdout.strip()
            check(re.fullmatch(r"[A-Za-z0-9_-]+", tok) is not None, f"{t}: token is unpadded base64url")
            shown = json.loads(ok(["authz", "show", "--json", tok], cenv).stdout)
            check(shown["subject"] == "alice" and shown["key_id"] == "alice-k1", f"{t}: show subject/key")
            check(shown["issuer"] == "test-authz" and shown["audience"] == "test-signing",
                  f"{t}: issuer and audience from the config")
            check(shown["issuer_key_id"] == kid, f"{t}: issuer key id is the signer's key id")
            check(shown["digests"] == [{"hash": "sha256", "value": digest}], f"{t}: digest")
            check(shown["max_signatures"] == 2 and shown["purpose"] == "sign", f"{t}: limits")
            check(shown["not_before_epoch"] == NOW and shown["not_after_epoch"] == NOW + 300,
                  f"{t}: default window is 300 s from now")
            check(len(shown["token_id"]) == 32, f"{t}: 16-byte random token id")
            check(shown["signature_checked"] is False, f"{t}: show says the signature is not checked")
            v = json.loads(ok(["--config", conf, "authz", "verify", "--json", tok], env).stdout)
            check(v["valid"] is True and v["subject"] == "alice", f"{t}: verify (global --config)")
            ok(["authz", "verify", "-"], cenv, input=tok + "\n")
            check(True, f"{t}: verify from stdin")

            # Independent check of the format and the signature.
            der = b64u_decode(tok)
            tbs, alg, sig = der_parts(der, tmp)
            if t == "ec":
                pubkey.verify(sig, tbs, ec.ECDSA(hashes.SHA256()))
                check(alg == bytes.fromhex("300a06082a8648ce3d040302"), "ec: ecdsa-with-SHA256, no parameters")
            elif t == "ed25519":
                pubkey.verify(sig, tbs)
                check(alg == bytes.fromhex("300506032b6570"), "ed25519: Ed25519, no parameters")
            else:
                pubkey.verify(sig, tbs, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                              hashes.SHA256())
                # OpenSSL's own encoding of the same PSS parameters, from a certificate.
                cert = os.path.join(tmp, "pss.der")
                subprocess.run(["openssl", "req", "-x509", "-new", "-key", priv, "-subj", "/CN=pss",
                                "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt",
                                "rsa_pss_saltlen:32", "-sigopt", "rsa_mgf1_md:sha256",
                                "-outform", "DER", "-out", cert], check=True, capture_output=True)
                with open(cert, "rb") as f:
                    check(alg in f.read(), "rsa-pss: AlgorithmIdentifier is byte-identical to OpenSSL's")
            check(True, f"{t}: signature verified by python3-cryptography over the asn1parse'd TBS")

            # Tampering: flip one character in the middle.
            mid = len(tok) // 2
            bad = tok[:mid] + ("A" if tok[mid] != "A" else "B") + tok[mid + 1:]
            r = run(["authz", "verify", "--json", bad], cenv)
            check(r.returncode != 0 and json.loads(r.stdout)["valid"] is False, f"{t}: tampered token refused")

        # Time window with the configured skew (60 s).
        tok = ok(["authz", "issue", "--user", "bob", "--key", "bob-k", "--digest", digest], cenv).stdout.strip()
        edge = dict(cenv, SMARTCERT_FAKE_TIME=str(NOW + 300 + 60))
        ok(["authz", "verify", tok], edge)
        check(True, "valid at notAfter + skew (demo_key from the config)")
        late = dict(cenv, SMARTCERT_FAKE_TIME=str(NOW + 300 + 61))
        r = run(["authz", "verify", "--json", tok], late)
        v = json.loads(r.stdout)
        check(r.returncode == 1 and v["error"] == "token-expired", "expired one second later")
        check(v.get("subject") == "bob" and v.get("key_id") == "bob-k", "refusal still names subject and key")
        tok = ok(["authz", "issue", "--user", "bob", "--key", "bob-k", "--digest", digest,
                  "--not-before-offset", "100"], cenv).stdout.strip()
        r = run(["authz", "verify", "--json", tok], cenv)
        check(json.loads(r.stdout)["error"] == "token-not-yet-valid", "notBefore beyond the skew")

        # Audience and issuer.
        tok = ok(["authz", "issue", "--user", "bob", "--key", "bob-k", "--digest", digest,
                  "--audience", "someone-else"], cenv).stdout.strip()
        r = run(["authz", "verify", "--json", tok], cenv)
        check(json.loads(r.stdout)["error"] == "token-audience", "wrong audience refused")
        stranger = os.path.join(tmp, "stranger.pem")
        ok(["authz", "keygen", "--out", stranger], env)
        tok = ok(["authz", "issue", "--user", "bob", "--key", "bob-k", "--digest", digest,
                  "--signing-key", stranger], cenv).stdout.strip()
        r = run(["authz", "verify", "--json", tok], cenv)
        check(json.loads(r.stdout)["error"] == "token-issuer", "untrusted signing key refused")

        # Renewal consent digest.
        tok = ok(["authz", "issue", "--user", "carol", "--key", "carol-k", "--purpose", "renew",
                  "--serial", "0A1B"], cenv).stdout.strip()
        shown = json.loads(ok(["authz", "show", "--json", tok], cenv).stdout)
        want = hashlib.sha256(b"smartcert-renew:carol:0a1b").hexdigest()
        check(shown["purpose"] == "renew" and shown["digests"][0]["value"] == want,
              "renew digest = SHA-256(\"smartcert-renew:<user>:<serial hex>\")")

        # Several digests, sha384, explicit token id, no deployment at all.
        d1 = hashlib.sha384(b"one").hexdigest()
        d2 = hashlib.sha384(b"two").hexdigest()
        tid = "00112233445566778899aabbccddeeff0011"
        r = ok(["authz", "issue", "--user", "dave", "--key", "dave-k", "--hash", "sha384",
                "--digest", d1, "--digest", d2, "--token-id", tid, "--signing-key", keys["ed25519"][0],
                "--issuer", "test-authz", "--audience", "test-signing", "--ttl", "60", "--json"], env)
        j = json.loads(r.stdout)
        check(j["token_id"] == tid and [d["value"] for d in j["digests"]] == [d1, d2] and
              j["not_after_epoch"] - j["not_before_epoch"] == 60, "issue --json without a deployment")
        ok(["authz", "verify", j["token"]], cenv)
        check(True, "config-less token verifies against the deployment trust")

        # Usage errors.
        for args, what in ((["authz", "issue", "--user", "x", "--key", "y"], "no digest"),
                           (["authz", "issue", "--user", "x", "--key", "y", "--digest", "abcd",
                             "--signing-key", keys["ec"][0]], "short digest"),
                           (["authz", "issue", "--user", "x", "--key", "y", "--digest", digest,
                             "--max-signatures", "65", "--signing-key", keys["ec"][0]], "65 signatures"),
                           (["authz", "issue", "--user", "x", "--key", "y", "--digest", digest], "no key, no config"),
                           (["authz", "frobnicate"], "unknown subcommand")):
            r = run(args, env)
            check(r.returncode == 2, f"usage error: {what} (exit {r.returncode})")
        r = run(["authz", "show", "not*base64"], env)
        check(r.returncode == 1 and "cannot be decoded" in r.stderr,
              "show refuses garbage")
        for sub in ("keygen", "issue", "show", "verify"):
            r = run(["authz", sub, "--help"], env)
            check(r.returncode == 0 and "usage: smartcert authz " + sub in r.stdout, f"{sub} --help")
    finally:
        if os.environ.get("SMARTCERT_KEEP_TEST_DIRS") != "1":
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
