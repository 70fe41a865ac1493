#!/usr/bin/python3
"""Stock PKCS#11 consumers sign with an approval deposited ahead
(`smartcert approve`), and each is refused without one.  One client per
run (argument): java, openssl-engine, gnutls-p11tool, gnutls-lib,
pkcs11-tool, c-context.  Every signature is verified with the openssl CLI
against the resident's certificate.  These are the complete examples of
docs/gateway-integration.md, "Deposited approvals"; exit 77 where the
client is not installed (scripts/install-deps.sh installs them)."""
import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.parse

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check, fail, mint_token, skip_unless  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = sys.argv[1] if len(sys.argv) > 1 else ""
ENGINE = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"


def run(args, env, check_rc=True, **kw):
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180, **kw)
    if check_rc and r.returncode != 0:
        fail(f"{' '.join(args[:3])}... failed ({r.returncode}): {r.stdout[-1500:]} {r.stderr[-1500:]}")
    return r


class Setup:
    """A deployment, residents alice (P-256) and carol (RSA-2048), and the
    gateway `plain-gw`, listed in signd.deposit_gateways."""

    def __init__(self, d):
        self.d = d
        d.conf_set("signd.deposit_gateways", "plain-gw")
        self.kid, self.cert = {}, {}
        for u, t in (("alice", "p256"), ("carol", "rsa2048")):
            e = d.enrol(u, t)
            self.kid[u] = e.get("key_id") or e["keys"][0]["key_id"]
        self.pin_file = os.path.join(d.tmp, "plain-gw.pin")
        d.sc("gateway", "add", "plain-gw", "--out", self.pin_file)
        self.pin = open(self.pin_file).read().strip()
        self.env = dict(d.env)
        self.env["SMARTCERT_CONF"] = d.config
        for u in self.kid:
            pem = os.path.join(d.tmp, f"{u}.pem")
            r = d.sc("ca", "export", "--user", u, "--out", pem, check=False)
            if r.returncode != 0 or not os.path.exists(pem):
                self.cert[u] = self.cert_via_tool(u, pem)
            else:
                self.cert[u] = pem

    def cert_via_tool(self, user, pem):
        """The certificate as a gateway sees it: pkcs11-tool --read-object."""
        der = pem + ".der"
        run(["pkcs11-tool", "--module", self.d.module, "--read-object", "--type", "cert",
             "--id", self.kid[user].encode().hex(), "-o", der], self.env)
        run(["openssl", "x509", "-inform", "DER", "-in", der, "-out", pem], self.env)
        return pem

    def der(self, user):
        out = self.cert[user] + ".cder"
        run(["openssl", "x509", "-in", self.cert[user], "-outform", "DER", "-out", out], self.env)
        return out

    def approve(self, user, digest, pin_file=None):
        tok = mint_token(self.d, user, self.kid[user], [("sha256", digest)])
        path = os.path.join(self.d.tmp, "tok.txt")
        with open(path, "w") as f:
            f.write(tok)
        r = self.d.sc("approve", "--token", "@" + path, "--gateway-pin-source",
                      "file:" + (pin_file or self.pin_file), check=False)
        os.unlink(path)
        check(r.returncode == 0, f"smartcert approve for {user} ({r.stderr.strip()})")

    def verify(self, user, digest, sig_file, what, rsa=False):
        dg = os.path.join(self.d.tmp, "dg.bin")
        with open(dg, "wb") as f:
            f.write(digest)
        args = ["openssl", "pkeyutl", "-verify", "-certin", "-inkey", self.cert[user], "-in", dg,
                "-sigfile", sig_file]
        if rsa:
            args += ["-pkeyopt", "digest:sha256"]
        r = run(args, self.env, check_rc=False)
        check(r.returncode == 0 and "Success" in r.stdout,
              f"{what}: openssl verifies the signature with {user}'s certificate")

    def file(self, name, data):
        p = os.path.join(self.d.tmp, name)
        with open(p, "wb") as f:
            f.write(data)
        return p


def java(s):
    skip_unless("javac", "java")
    cls = tempfile.mkdtemp(dir=s.d.tmp)
    run(["javac", "-d", cls, os.path.join(HERE, "clients", "DepositSign.java")], s.env)
    cfg = s.file("sunpkcs11.cfg", f"name = smartcert\nlibrary = {s.d.module}\nslot = 0\n".encode())
    cases = [("SHA256withECDSA", "alice", False, False), ("NONEwithECDSA", "alice", True, False),
             ("SHA256withRSA", "carol", False, True)]
    for alg, user, prehashed, rsa in cases:
        doc = f"a contract signed in Java with {alg}".encode()
        digest = hashlib.sha256(doc).digest()
        inp = s.file(f"in-{alg}", digest if prehashed else doc)
        out = os.path.join(s.d.tmp, f"sig-{alg}")
        jcmd = ["java", "-cp", cls, "DepositSign", cfg, s.pin_file, s.der(user), alg, inp, out]
        r = run(jcmd, s.env, check_rc=False)
        check(r.returncode == 3 and "CKR_USER_NOT_LOGGED_IN" in r.stderr,
              f"Java {alg} without a deposit is refused ({r.stderr.strip()[-160:]})")
        s.approve(user, digest)
        r = run(jcmd, s.env, check_rc=False)
        check(r.returncode == 0, f"Java SunPKCS11 Signature.sign() {alg} on a deposit ({r.stderr.strip()[-300:]})")
        s.verify(user, digest, out, f"Java {alg}", rsa=rsa)


def openssl_engine(s):
    if not os.path.exists(ENGINE):
        print("SKIP: libengine-pkcs11-openssl is not installed", file=sys.stderr)
        sys.exit(77)
    conf = s.file("openssl-pkcs11.cnf", f"""openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = {ENGINE}
MODULE_PATH = {s.d.module}
PIN = {s.pin}
init = 0
""".encode())
    os.chmod(conf, 0o600)       # it holds the gateway credential
    env = dict(s.env)
    env["OPENSSL_CONF"] = conf
    # libp11 0.4.12 caps a URI's pin-value (and its PIN prompt) at 32
    # characters; a gateway credential is longer, so it goes in the engine's
    # PIN control (uncapped), and the URI names only the key.
    uri = "pkcs11:token=smartcert;id=" + urllib.parse.quote(s.kid["alice"], safe="") + ";type=private"
    digest = hashlib.sha256(b"signed through the OpenSSL engine").digest()
    dg = s.file("engine-dg.bin", digest)
    out = os.path.join(s.d.tmp, "engine.sig")
    cmd = ["openssl", "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-inkey", uri,
           "-sign", "-in", dg, "-out", out]
    r = run(cmd, env, check_rc=False)
    check(r.returncode != 0 and "User not logged in" in r.stderr,
          f"openssl pkeyutl -sign (libp11 engine) without a deposit is refused ({r.stderr.strip()[-200:]})")
    s.approve("alice", digest)
    r = run(cmd, env, check_rc=False)
    check(r.returncode == 0, f"openssl pkeyutl -sign with a PKCS#11 URI on a deposit ({r.stderr.strip()[-300:]})")
    s.verify("alice", digest, out, "OpenSSL 3 + libp11 engine")


def gnutls_p11tool(s):
    skip_unless("p11tool")
    # p11tool --test-sign signs its fixed test data ("Test data to sign",
    # SHA-256) and verifies the signature with the token's public key.
    digest = hashlib.sha256(b"Test data to sign").digest()
    env = dict(s.env)
    env["GNUTLS_PIN"] = s.pin
    url = "pkcs11:token=smartcert;id=" + urllib.parse.quote(s.kid["alice"], safe="") + ";type=private"
    cmd = ["p11tool", "--provider", s.d.module, "--login", "--test-sign", url]
    r = run(cmd, env, check_rc=False)
    check(r.returncode != 0, f"p11tool --test-sign without a deposit is refused ({(r.stdout + r.stderr).strip()[-200:]})")
    s.approve("alice", digest)
    r = run(cmd, env, check_rc=False)
    check(r.returncode == 0 and "public key in the token... ok" in r.stdout + r.stderr,
          f"p11tool --test-sign on a deposit ({(r.stdout + r.stderr).strip()[-300:]})")
    audit = [x for x in s.d.audit("alice") if x.get("kind") == "sign"]
    check(audit and audit[-1].get("digest") == digest.hex(),
          "the signature p11tool verified is the approved digest's, by the audit record")


def gnutls_lib(s):
    prog = os.environ.get("SMARTCERT_GNUTLS_SIGN")
    if not prog or not os.path.exists(prog):
        print("SKIP: the GnuTLS client was not built (libgnutls28-dev)", file=sys.stderr)
        sys.exit(77)
    digest = hashlib.sha256(b"signed through the GnuTLS library").digest()
    dg = s.file("gnutls-dg.bin", digest)
    out = os.path.join(s.d.tmp, "gnutls.sig")
    url = "pkcs11:token=smartcert;id=" + urllib.parse.quote(s.kid["alice"], safe="") + ";type=private"
    for gw_name, pin_file in (("plain-gw", s.pin_file), ("default", s.d.info["gateway_pin_file"])):
        cmd = [prog, s.d.module, url, pin_file, dg, out]
        r = run(cmd, s.env, check_rc=False)
        check(r.returncode == 3, f"GnuTLS library ({gw_name}) without a deposit is refused ({r.stderr.strip()[-200:]})")
        s.approve("alice", digest, pin_file=pin_file)
        r = run(cmd, s.env, check_rc=False)
        check(r.returncode == 0, f"GnuTLS library, PIN callback, gateway {gw_name}: signs on a deposit ({r.stderr.strip()[-300:]})")
        s.verify("alice", digest, out, f"GnuTLS library ({gw_name})")
        digest = hashlib.sha256(b"signed again through the GnuTLS library").digest()
        dg = s.file("gnutls-dg.bin", digest)


def pkcs11_tool(s):
    skip_unless("pkcs11-tool")
    # The default gateway: keys are CKA_ALWAYS_AUTHENTICATE, so pkcs11-tool
    # logs in again with --pin after C_SignInit; with a deposit waiting that
    # is no token, and the signature goes through.
    digest = hashlib.sha256(b"signed by pkcs11-tool").digest()
    dg = s.file("tool-dg.bin", digest)
    out = os.path.join(s.d.tmp, "tool.sig")
    cmd = ["pkcs11-tool", "--module", s.d.module, "--login", "--pin", s.d.gateway_pin, "--sign",
           "--id", s.kid["alice"].encode().hex(), "-m", "ECDSA", "--signature-format", "openssl",
           "-i", dg, "-o", out]
    r = run(cmd, s.env, check_rc=False, stdin=subprocess.DEVNULL)
    check(r.returncode != 0, f"pkcs11-tool --sign without a deposit is refused ({r.stderr.strip()[-160:]})")
    default_pin = s.d.info["gateway_pin_file"]
    s.approve("alice", digest, pin_file=default_pin)
    r = run(cmd, s.env, check_rc=False, stdin=subprocess.DEVNULL)
    check(r.returncode == 0, f"pkcs11-tool --sign --pin, non-interactive, on a deposit ({r.stderr.strip()[-300:]})")
    s.verify("alice", digest, out, "OpenSC pkcs11-tool")
    # plain-gw: no context login at all.
    digest = hashlib.sha256(b"signed by pkcs11-tool as plain-gw").digest()
    dg = s.file("tool-dg.bin", digest)
    cmd[cmd.index("--pin") + 1] = s.pin
    s.approve("alice", digest)
    r = run(cmd, s.env, check_rc=False, stdin=subprocess.DEVNULL)
    check(r.returncode == 0, f"pkcs11-tool --sign as a deposit gateway ({r.stderr.strip()[-300:]})")
    s.verify("alice", digest, out, "OpenSC pkcs11-tool (plain-gw)")


def c_context(s):
    # The reference gateway in C (tools/cmd_sign.c) on the context-login
    # path: unchanged, no deposit involved.
    doc = s.file("doc.txt", b"signed by the C gateway with a context login\n")
    r = s.d.sc("sign", "--user", "alice", "--in", doc, "--authorize", "--out", doc + ".p7s", check=False)
    check(r.returncode == 0, f"smartcert sign (C, context login) signs ({r.stderr.strip()[-200:]})")
    r = run(["openssl", "cms", "-verify", "-binary", "-content", doc, "-inform", "DER", "-in", doc + ".p7s",
             "-CAfile", os.path.join(s.d.dir, "ca", "chain.pem"), "-out", "/dev/null"], s.env, check_rc=False)
    check(r.returncode == 0, f"openssl cms -verify accepts it ({r.stderr.strip()[-200:]})")
    r = s.d.sc("sign", "--user", "alice", "--in", doc, "--token", "AAAA", "--out", doc + ".x", check=False)
    check(r.returncode == 4, "without a valid token the C gateway is refused")


CLIENTS = {"java": java, "openssl-engine": openssl_engine, "gnutls-p11tool": gnutls_p11tool,
           "gnutls-lib": gnutls_lib, "pkcs11-tool": pkcs11_tool, "c-context": c_context}


def main():
    if CLIENT not in CLIENTS:
        fail(f"usage: {sys.argv[0]} {'|'.join(CLIENTS)}")
    skip_unless("openssl")
    with Deployment(prefix=f"signd-dc-{CLIENT}-") as d:
        s = Setup(d)
        CLIENTS[CLIENT](s)


if __name__ == "__main__":
    main()
