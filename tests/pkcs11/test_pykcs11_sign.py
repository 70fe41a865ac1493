#!/usr/bin/python3
"""Every signing mechanism through the module, driven by PyKCS11 exactly as a
gateway drives it: C_Login(CKU_USER) once, then for each signature
C_SignInit -> C_Login(CKU_CONTEXT_SPECIFIC, token) -> C_Sign (NULL length
query first, then the real call).  Every signature is verified with Python
`cryptography` against the certificate read from the token, a sample also
with the openssl CLI; the length query must not spend a single-use token."""
import hashlib
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, Gateway, check, expect_ckr, fail, mint_token, skip_unless  # noqa: E402

try:
    import PyKCS11 as P
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
except ImportError as e:
    print(f"SKIP: {e} (install python3-pykcs11 python3-cryptography)", file=sys.stderr)
    sys.exit(77)

skip_unless("openssl")

HASH = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
CKM_HASH = {"sha256": (P.CKM_SHA256, P.CKG_MGF1_SHA256), "sha384": (P.CKM_SHA384, P.CKG_MGF1_SHA384),
            "sha512": (P.CKM_SHA512, P.CKG_MGF1_SHA512)}
DIGESTINFO_PREFIX = {  # RFC 8017 §9.2 note 1
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


def raw_to_der(sig):
    n = len(sig) // 2
    return utils.encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))


# (name, user, CKM, kind, hash): kind says what C_Sign receives and how the
# signature verifies.  "raw": the digest itself; "di": a DigestInfo;
# "data": the message (the module hashes it).
CASES = [
    ("CKM_ECDSA p256", "ec256", P.CKM_ECDSA, "ecdsa-raw", "sha256"),
    ("CKM_ECDSA p384", "ec384", P.CKM_ECDSA, "ecdsa-raw", "sha384"),
    ("CKM_ECDSA_SHA256", "ec256", P.CKM_ECDSA_SHA256, "ecdsa-data", "sha256"),
    ("CKM_ECDSA_SHA384", "ec384", P.CKM_ECDSA_SHA384, "ecdsa-data", "sha384"),
    ("CKM_ECDSA_SHA512", "ec256", P.CKM_ECDSA_SHA512, "ecdsa-data", "sha512"),
    ("CKM_RSA_PKCS DigestInfo sha256", "rsa", P.CKM_RSA_PKCS, "pkcs1-di", "sha256"),
    ("CKM_RSA_PKCS DigestInfo sha384", "rsa", P.CKM_RSA_PKCS, "pkcs1-di", "sha384"),
    ("CKM_RSA_PKCS DigestInfo sha512", "rsa", P.CKM_RSA_PKCS, "pkcs1-di", "sha512"),
    ("CKM_SHA256_RSA_PKCS", "rsa", P.CKM_SHA256_RSA_PKCS, "pkcs1-data", "sha256"),
    ("CKM_SHA384_RSA_PKCS", "rsa", P.CKM_SHA384_RSA_PKCS, "pkcs1-data", "sha384"),
    ("CKM_SHA512_RSA_PKCS", "rsa", P.CKM_SHA512_RSA_PKCS, "pkcs1-data", "sha512"),
    ("CKM_ECDSA p256 sha512 digest", "ec256", P.CKM_ECDSA, "ecdsa-raw", "sha512"),
    ("CKM_RSA_PKCS_PSS sha256", "rsa", P.CKM_RSA_PKCS_PSS, "pss-raw", "sha256"),
    ("CKM_RSA_PKCS_PSS sha384", "rsa", P.CKM_RSA_PKCS_PSS, "pss-raw", "sha384"),
    ("CKM_RSA_PKCS_PSS sha512", "rsa", P.CKM_RSA_PKCS_PSS, "pss-raw", "sha512"),
    ("CKM_SHA256_RSA_PKCS_PSS", "rsa", P.CKM_SHA256_RSA_PKCS_PSS, "pss-data", "sha256"),
    ("CKM_SHA384_RSA_PKCS_PSS", "rsa", P.CKM_SHA384_RSA_PKCS_PSS, "pss-data", "sha384"),
    ("CKM_SHA512_RSA_PKCS_PSS", "rsa", P.CKM_SHA512_RSA_PKCS_PSS, "pss-data", "sha512"),
    ("CKM_SHA256_RSA_PKCS RSA-3072", "rsa3072", P.CKM_SHA256_RSA_PKCS, "pkcs1-data", "sha256"),
    ("CKM_SHA384_RSA_PKCS_PSS RSA-3072", "rsa3072", P.CKM_SHA384_RSA_PKCS_PSS, "pss-data", "sha384"),
]


def mechanism(ckm, kind, h):
    if kind.startswith("pss"):
        ckh, mgf = CKM_HASH[h]
        return P.RSA_PSS_Mechanism(ckm, ckh, mgf, hashlib.new(h).digest_size)
    return P.Mechanism(ckm, None)


def verify(pub, kind, h, message, digest, sig):
    """Raises InvalidSignature when the signature is wrong."""
    H = HASH[h]()
    if kind == "ecdsa-raw":
        pub.verify(raw_to_der(sig), digest, ec.ECDSA(utils.Prehashed(H)))
    elif kind == "ecdsa-data":
        pub.verify(raw_to_der(sig), message, ec.ECDSA(H))
    elif kind == "pkcs1-di":
        pub.verify(sig, digest, padding.PKCS1v15(), utils.Prehashed(H))
    elif kind == "pkcs1-data":
        pub.verify(sig, message, padding.PKCS1v15(), H)
    elif kind == "pss-raw":
        pub.verify(sig, digest, padding.PSS(padding.MGF1(H), H.digest_size), utils.Prehashed(H))
    elif kind == "pss-data":
        pub.verify(sig, message, padding.PSS(padding.MGF1(H), H.digest_size), H)


def openssl_verify(tmp, cert_der, kind, h, message, digest, sig):
    """The openssl CLI as a second, independent judge, given only the
    user's certificate (pkeyutl -certin; dgst with the key openssl itself
    takes out of the certificate)."""
    cert, pub, msg, dig, sigf = (os.path.join(tmp, n) for n in ("cert.der", "pub.pem", "msg.bin", "dgst.bin",
                                                               "sig.bin"))
    for path, data in ((cert, cert_der), (msg, message), (dig, digest),
                       (sigf, raw_to_der(sig) if kind.startswith("ecdsa") else sig)):
        with open(path, "wb") as f:
            f.write(data)
    r = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", cert, "-pubkey", "-noout", "-out", pub],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"openssl cannot read the certificate: {r.stderr}")
    pss = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", f"rsa_pss_saltlen:{hashlib.new(h).digest_size}"]
    pkeyutl = ["openssl", "pkeyutl", "-verify", "-certin", "-inkey", cert, "-keyform", "DER", "-in", dig,
               "-sigfile", sigf]
    if kind == "ecdsa-raw":
        cmd = pkeyutl
    elif kind == "pkcs1-di":
        cmd = pkeyutl + ["-pkeyopt", f"digest:{h}"]
    elif kind == "pss-raw":
        cmd = pkeyutl + ["-pkeyopt", f"digest:{h}"] + [o.replace("-sigopt", "-pkeyopt") for o in pss]
    elif kind == "pss-data":
        cmd = ["openssl", "dgst", f"-{h}", *pss, "-verify", pub, "-signature", sigf, msg]
    else:
        cmd = ["openssl", "dgst", f"-{h}", "-verify", pub, "-signature", sigf, msg]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode == 0 and ("Verified OK" in r.stdout or "Signature Verified Successfully" in r.stdout)


def main():
    with Deployment(prefix="p11-sign-") as d, tempfile.TemporaryDirectory(dir=d.tmp) as tmp:
        d.enrol("ec256", "p256")
        d.enrol("ec384", "p384")
        d.enrol("rsa", "rsa2048")
        d.enrol("rsa3072", "rsa3072")
        gw = Gateway(d)
        keys, ders = {}, {}
        for user in ("ec256", "ec384", "rsa", "rsa3072"):
            h, kid, der = gw.key(user)
            cert = x509.load_der_x509_certificate(der)
            check(cert.public_key() is not None, f"{user}: key {kid} and its certificate found on the token")
            keys[user] = (h, kid, cert.public_key())
            ders[user] = der

        for i, (name, user, ckm, kind, h) in enumerate(CASES):
            hkey, kid, pub = keys[user]
            message = f"document {i} for {name}\n".encode() * 7
            digest = hashlib.new(h, message).digest()
            if kind.endswith("-data"):
                data = message
            elif kind == "pkcs1-di":
                data = DIGESTINFO_PREFIX[h] + digest
            else:
                data = digest
            token = mint_token(d, user, kid, [(h, digest)])
            sig = gw.sign(hkey, mechanism(ckm, kind, h), data, token)
            try:
                verify(pub, kind, h, message, digest, sig)
            except InvalidSignature:
                fail(f"{name}: the signature does not verify with the user's certificate")
            check(True, f"{name}: signed with a token and verified with the certificate")
            bad = bytearray(sig)
            bad[len(bad) // 2] ^= 0x01
            try:
                verify(pub, kind, h, message, digest, bytes(bad))
                fail(f"{name}: a bit-flipped signature verified: the verifier proves nothing")
            except InvalidSignature:
                pass
            check(openssl_verify(tmp, ders[user], kind, h, message, digest, sig),
                  f"{name}: the openssl CLI verifies it with the certificate too")
            check(not openssl_verify(tmp, ders[user], kind, h, message, digest, bytes(bad)),
                  f"{name}: ... and rejects the bit-flipped signature")

        # The NULL-length query does not spend the token: the sign above
        # (length query, then the signature) succeeded with max 1.  Now the
        # same single-use token a second time is refused.
        hkey, kid, pub = keys["ec256"]
        digest = hashlib.sha256(b"spend me once").digest()
        token = mint_token(d, "ec256", kid, [("sha256", digest)], max_signatures=1)
        sig = gw.sign(hkey, P.Mechanism(P.CKM_ECDSA, None), digest, token)
        check(len(sig) == 64, "length query then signature with a max-signatures=1 token")
        expect_ckr(lambda: gw.sign(hkey, P.Mechanism(P.CKM_ECDSA, None), digest, token),
                   P.CKR_PIN_EXPIRED, "the same single-use token again is refused")

        # Several length queries in a row still leave the one signature.
        digest = hashlib.sha256(b"three length queries").digest()
        token = mint_token(d, "ec256", kid, [("sha256", digest)], max_signatures=1)
        s = gw.session
        check(s.lib.C_SignInit(s.session, P.Mechanism(P.CKM_ECDSA, None).to_native(), hkey) == P.CKR_OK,
              "C_SignInit")
        s.login(token, user_type=P.CKU_CONTEXT_SPECIFIC)
        for _ in range(3):
            buf = P.ckbytelist()
            check(s.lib.C_Sign(s.session, P.ckbytelist(digest), buf) == P.CKR_OK and len(buf) == 64,
                  "C_Sign(NULL) reports 64 bytes without signing")
        buf = P.ckbytelist()
        s.lib.C_Sign(s.session, P.ckbytelist(digest), buf)   # length: sizes buf
        check(s.lib.C_Sign(s.session, P.ckbytelist(digest), buf) == P.CKR_OK, "then the real C_Sign")
        try:
            pub.verify(raw_to_der(bytes(buf)), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        except InvalidSignature:
            fail("signature after repeated length queries does not verify")

        # max-signatures=2: two signatures, then spent.
        d2 = hashlib.sha256(b"twice").digest()
        token = mint_token(d, "ec256", kid, [("sha256", d2)], max_signatures=2)
        gw.sign(hkey, P.Mechanism(P.CKM_ECDSA, None), d2, token)
        gw.sign(hkey, P.Mechanism(P.CKM_ECDSA, None), d2, token)
        check(True, "a max-signatures=2 token signs twice")
        expect_ckr(lambda: gw.sign(hkey, P.Mechanism(P.CKM_ECDSA, None), d2, token),
                   P.CKR_PIN_EXPIRED, "and a third time is refused")

        # One token listing several digests signs each of them.
        ds = [hashlib.sha256(f"batch {i}".encode()).digest() for i in range(3)]
        token = mint_token(d, "ec256", kid, [("sha256", x) for x in ds], max_signatures=3)
        for x in ds:
            sig = gw.sign(hkey, P.Mechanism(P.CKM_ECDSA, None), x, token)
            pub.verify(raw_to_der(sig), x, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        check(True, "a token listing three digests signs all three")

        # Multi-part hash-and-sign (C_SignUpdate/C_SignFinal) with the module hashing.
        hkey_r, kid_r, pub_r = keys["rsa"]
        s = gw.session
        message = b"part one, " * 1000 + b"part two"
        token = mint_token(d, "rsa", kid_r, [("sha256", hashlib.sha256(message).digest())])
        rv = s.lib.C_SignInit(s.session, P.Mechanism(P.CKM_SHA256_RSA_PKCS, None).to_native(), hkey_r)
        check(rv == P.CKR_OK, "C_SignInit CKM_SHA256_RSA_PKCS for multi-part")
        s.login(token, user_type=P.CKU_CONTEXT_SPECIFIC)
        rv1 = s.lib.C_SignUpdate(s.session, P.ckbytelist(message[:5000]))
        rv2 = s.lib.C_SignUpdate(s.session, P.ckbytelist(message[5000:]))
        sig = P.ckbytelist()
        rv3 = s.lib.C_SignFinal(s.session, sig)       # NULL buffer: length, sizes sig
        if rv3 == P.CKR_OK:
            rv3 = s.lib.C_SignFinal(s.session, sig)
        check(rv1 == rv2 == rv3 == P.CKR_OK, "C_SignUpdate x2 + C_SignFinal")
        try:
            pub_r.verify(bytes(sig), message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            fail("multi-part signature does not verify")
        check(True, "multi-part CKM_SHA256_RSA_PKCS signature verifies")
        gw.close()


if __name__ == "__main__":
    main()
