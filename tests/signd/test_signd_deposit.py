#!/usr/bin/python3
"""Approvals deposited ahead (`smartcert approve`, SC_OP_DEPOSIT), then a
plain C_SignInit -> C_Sign:

* without a deposit a plain C_Sign is refused exactly as before
  (CKR_USER_NOT_LOGGED_IN); with one it signs (PyKCS11's high-level
  Session.sign(), single- and multi-part), and the openssl CLI verifies it
  with the resident's certificate;
* refused at the deposit with a clear reason: a bad signature, another
  audience, an expired token, another resident's key; refused at C_Sign: a
  digest the token does not list, another gateway's deposit, a second
  consumption (two threads, two processes: exactly one signature);
* `--for GATEWAY` hands the deposit to another gateway only;
* a client that logs in again with the gateway PIN (pkcs11-tool --pin)
  signs when a deposit exists and locks nothing when none does;
* signd.deposit_gateways: CKA_ALWAYS_AUTHENTICATE is CK_FALSE for the
  gateways listed, CK_TRUE for the others;
* the context-login path is unchanged (a token as context PIN signs)."""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import (Deployment, Gateway, check, expect_ckr, fail, mint_token,  # noqa: E402
                       pykcs11_or_skip, skip_unless)

P = pykcs11_or_skip()
skip_unless("openssl")


def approve(d, token, *extra, pin_file=None, env=None):
    """`smartcert approve --token @FILE`: (exit code, stderr)."""
    with tempfile.NamedTemporaryFile("w", dir=d.tmp, delete=False) as f:
        f.write(token)
    args = ["approve", "--token", "@" + f.name, *extra]
    if pin_file:
        args += ["--gateway-pin-source", "file:" + pin_file]
    r = d.sc(*args, check=False, env=env)
    os.unlink(f.name)
    return r.returncode, r.stderr.strip()


def verify_ec(d, cert_der, digest, sig_rs, what):
    """openssl pkeyutl -verify of an r||s ECDSA signature over a digest."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    n = len(sig_rs) // 2
    der = encode_dss_signature(int.from_bytes(sig_rs[:n], "big"), int.from_bytes(sig_rs[n:], "big"))
    verify_raw(d, cert_der, digest, der, what)


def verify_raw(d, cert_der, digest, sig_der, what, rsa=False):
    base = tempfile.mkdtemp(dir=d.tmp)
    cert, dg, sig = (os.path.join(base, n) for n in ("cert.der", "dg.bin", "sig.bin"))
    for p, b in ((cert, cert_der), (dg, digest), (sig, sig_der)):
        with open(p, "wb") as f:
            f.write(b)
    pem = cert + ".pem"
    subprocess.run(["openssl", "x509", "-inform", "DER", "-in", cert, "-out", pem], check=True)
    args = ["openssl", "pkeyutl", "-verify", "-certin", "-inkey", pem, "-in", dg, "-sigfile", sig]
    if rsa:
        args += ["-pkeyopt", "digest:sha256"]
    r = subprocess.run(args, capture_output=True, text=True)
    check(r.returncode == 0 and "Success" in r.stdout, f"{what}: openssl verifies it with the certificate")


def child(spec):
    """One gateway process: plain C_SignInit -> C_Sign when `go` appears."""
    import time
    d = type("D", (), spec)
    gw = Gateway(d)
    key = gw.key(spec["user"])[0]
    s = gw.new_session()
    s.lib.C_SignInit(s.session, P.Mechanism(P.CKM_ECDSA, None).to_native(), key)
    with open(spec["ready"], "w"):
        pass
    while not os.path.exists(spec["go"]):
        time.sleep(0.005)
    sig = P.ckbytelist(bytes(64))
    rv = s.lib.C_Sign(s.session, P.ckbytelist(bytes.fromhex(spec["digest"])), sig)
    print(json.dumps({"rv": rv}))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        child(json.loads(sys.argv[2]))
        return
    with Deployment(prefix="signd-dep-") as d:
        d.conf_set("authz.lock_threshold", "10", restart=False)
        d.conf_set("signd.deposit_gateways", "plain-gw")
        kid = {}
        for u, t in (("alice", "p256"), ("bob", "p256"), ("carol", "rsa2048")):
            e = d.enrol(u, t)
            kid[u] = e.get("key_id") or e["keys"][0]["key_id"]
        gw = Gateway(d)
        key_a, _, cert_a = gw.key("alice")
        key_c, _, cert_c = gw.key("carol")

        def dg(text):
            return hashlib.sha256(text.encode()).digest()

        def plain(key, mech, data, session=None):
            return gw.sign(key, mech, data, None, session=session)

        ecdsa = P.Mechanism(P.CKM_ECDSA, None)
        # Without a deposit: refused exactly as before.
        expect_ckr(lambda: plain(key_a, ecdsa, dg("no deposit")), P.CKR_USER_NOT_LOGGED_IN,
                   "a plain C_Sign without a deposit: CKR_USER_NOT_LOGGED_IN, as before")

        # A deposit, then PyKCS11's high-level Session.sign() (CKM_ECDSA_SHA256).
        doc = b"contract for alice"
        tok = mint_token(d, "alice", kid["alice"], [("sha256", hashlib.sha256(doc).digest())])
        rc, err = approve(d, tok)
        check(rc == 0, f"smartcert approve deposits a valid token ({err})")
        sig = bytes(gw.session.sign(key_a, doc, P.Mechanism(P.CKM_ECDSA_SHA256, None)))
        verify_ec(d, cert_a, hashlib.sha256(doc).digest(), sig, "PyKCS11 Session.sign() on a deposit")
        recs = [r for r in d.audit("alice") if r.get("kind") == "sign"]
        check(recs and "deposited approval" in (recs[-1].get("detail") or ""),
              "the audit record says the approval was deposited")
        kinds = [r.get("kind") for r in d.audit("alice")]
        check("deposit" in kinds, "the deposit itself is audited")
        expect_ckr(lambda: gw.session.sign(key_a, doc, P.Mechanism(P.CKM_ECDSA_SHA256, None)),
                   P.CKR_USER_NOT_LOGGED_IN, "a second consumption of the same deposit is refused")
        rc, err = approve(d, tok)
        check(rc == 4 and "token-replay" in err, f"a spent token cannot be deposited again ({err})")

        # Multi-part hash-and-sign on RSA: C_SignUpdate/C_SignFinal.
        doc_c = b"carol's form" * 1000
        tok = mint_token(d, "carol", kid["carol"], [("sha256", hashlib.sha256(doc_c).digest())])
        check(approve(d, tok)[0] == 0, "a deposit for an RSA key")
        s = gw.new_session()
        check(s.lib.C_SignInit(s.session, P.Mechanism(P.CKM_SHA256_RSA_PKCS, None).to_native(), key_c) == 0,
              "C_SignInit(CKM_SHA256_RSA_PKCS)")
        for i in range(0, len(doc_c), 4000):
            check(s.lib.C_SignUpdate(s.session, P.ckbytelist(doc_c[i:i + 4000])) == 0, "C_SignUpdate") \
                if i == 0 else s.lib.C_SignUpdate(s.session, P.ckbytelist(doc_c[i:i + 4000]))
        out = P.ckbytelist()
        s.lib.C_SignFinal(s.session, out)
        rv = s.lib.C_SignFinal(s.session, out)
        check(rv == 0, f"C_SignFinal consumes the deposit ({P.CKR.get(rv, rv)})")
        verify_raw(d, cert_c, hashlib.sha256(doc_c).digest(), bytes(out), "C_SignUpdate/C_SignFinal", rsa=True)
        s.closeSession()

        # Refused at the deposit, each with its reason.
        digest = dg("refusals")
        good = mint_token(d, "alice", kid["alice"], [("sha256", digest)])
        raw = bytearray(good.encode())
        raw[-5] = ord("A") if raw[-5] != ord("A") else ord("B")
        rc, err = approve(d, raw.decode())
        check(rc == 4 and "token-" in err, f"a bad signature is refused at the deposit ({err})")
        rc, err = approve(d, mint_token(d, "alice", kid["alice"], [("sha256", digest)], audience="other-service"))
        check(rc == 4 and "audience" in err, f"another audience is refused at the deposit ({err})")
        import time
        now = int(time.time())
        rc, err = approve(d, mint_token(d, "alice", kid["alice"], [("sha256", digest)],
                                        not_before=now - 900, not_after=now - 600))
        check(rc == 4 and "expired" in err, f"an expired token is refused at the deposit ({err})")
        rc, err = approve(d, mint_token(d, "bob", kid["alice"], [("sha256", digest)]))
        check(rc == 4 and "subject" in err, f"a token whose subject does not own the key is refused ({err})")
        rc, err = approve(d, mint_token(d, "alice", "no-such-key", [("sha256", digest)]))
        check(rc == 4 and "key" in err, f"a token for a key that does not exist is refused ({err})")
        rc, err = approve(d, good, "--for", "nobody")
        check(rc == 4 and "gateway" in err, f"--for an unknown gateway is refused ({err})")

        # A digest the deposited token does not list.
        rc, err = approve(d, good)
        check(rc == 0, f"deposit for the digest checks ({err})")
        rc2, err2 = approve(d, good)
        check(rc2 == 4 and "already deposited" in err2, f"the same token twice is refused ({err2})")
        expect_ckr(lambda: plain(key_a, ecdsa, dg("something else")), P.CKR_FUNCTION_REJECTED,
                   "a digest the deposit does not list: CKR_FUNCTION_REJECTED")

        # Another gateway cannot consume it; --for hands it over.
        other_pin_file = os.path.join(d.tmp, "other.pin")
        d.sc("gateway", "add", "other-gw", "--out", other_pin_file)
        other_pin = open(other_pin_file).read().strip()
        env = dict(d.env)
        env["SMARTCERT_GW_PIN"] = other_pin
        code = ("import os,sys,json,hashlib\n"
                f"sys.path.insert(0,{os.path.dirname(os.path.abspath(__file__))!r}+'/../lib')\n"
                "from scfixture import Gateway\nimport PyKCS11 as P\n"
                "d=type('D',(),json.loads(sys.argv[1]))\ng=Gateway(d)\nk=g.key(d.user)[0]\n"
                "try:\n  g.sign(k,P.Mechanism(P.CKM_ECDSA,None),bytes.fromhex(d.digest),None); print(0)\n"
                "except P.PyKCS11Error as e:\n  print(e.value)\n")

        def other_sign(digest_bytes, pin=other_pin, user="alice"):
            spec = {"config": d.config, "module": d.module, "gateway_pin": pin, "user": user,
                    "digest": digest_bytes.hex()}
            r = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=d.env,
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                fail(f"gateway child: {r.stderr[-2000:]}")
            return int(r.stdout.split()[-1])

        rv = other_sign(digest)
        check(rv == P.CKR_USER_NOT_LOGGED_IN,
              f"another gateway cannot consume this gateway's deposit ({P.CKR.get(rv, rv)})")
        sig = plain(key_a, ecdsa, digest)
        verify_ec(d, cert_a, digest, sig, "the depositing gateway consumes it")
        d2 = dg("for other-gw")
        check(approve(d, mint_token(d, "alice", kid["alice"], [("sha256", d2)]), "--for", "other-gw")[0] == 0,
              "a deposit --for other-gw")
        expect_ckr(lambda: plain(key_a, ecdsa, d2), P.CKR_USER_NOT_LOGGED_IN,
                   "the depositing gateway cannot consume a deposit made for another")
        rv = other_sign(d2)
        check(rv == 0, f"the gateway named by --for consumes it ({P.CKR.get(rv, rv)})")

        # A second consumption racing: two threads of one gateway.
        for round_ in range(3):
            d3 = dg(f"thread race {round_}")
            check(approve(d, mint_token(d, "alice", kid["alice"], [("sha256", d3)]))[0] == 0,
                  f"race {round_}: deposited")
            sessions = [gw.new_session() for _ in range(2)]
            for s in sessions:
                s.lib.C_SignInit(s.session, ecdsa.to_native(), key_a)
            barrier = threading.Barrier(2)
            out = [None, None]

            def go(i):
                barrier.wait()
                sig = P.ckbytelist(bytes(64))
                out[i] = sessions[i].lib.C_Sign(sessions[i].session, P.ckbytelist(d3), sig)
            ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
            check(sorted(out) == sorted([0, P.CKR_USER_NOT_LOGGED_IN]) or
                  sorted(out) == sorted([0, P.CKR_PIN_EXPIRED]),
                  f"race {round_}: two threads, one deposit: exactly one signature ({out})")
            for s in sessions:
                s.closeSession()

        # ... and two gateway processes (same credential, own module each).
        d4 = dg("process race")
        check(approve(d, mint_token(d, "alice", kid["alice"], [("sha256", d4)]))[0] == 0,
              "process race: deposited")
        go = os.path.join(d.tmp, "go")
        procs, readies = [], []
        for i in range(2):
            ready = os.path.join(d.tmp, f"ready{i}")
            readies.append(ready)
            spec = {"config": d.config, "module": d.module, "gateway_pin": d.gateway_pin,
                    "user": "alice", "digest": d4.hex(), "ready": ready, "go": go}
            procs.append(subprocess.Popen([sys.executable, __file__, "child", json.dumps(spec)],
                                          env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        deadline = time.time() + 60
        while not all(os.path.exists(r) for r in readies) and time.time() < deadline:
            time.sleep(0.01)
        with open(go, "w"):
            pass
        rvs = []
        for p in procs:
            o, e = p.communicate(timeout=60)
            if p.returncode != 0:
                fail(f"race child: {e[-2000:]}")
            rvs.append(json.loads(o.splitlines()[-1])["rv"])
        check(rvs.count(0) == 1, f"two gateway processes, one deposit: exactly one signature ({rvs})")

        # A client that logs in again with the gateway PIN: signs with a
        # deposit, and without one is refused without locking the key
        # (five tries).
        d5 = dg("pin re-sent")
        check(approve(d, mint_token(d, "alice", kid["alice"], [("sha256", d5)]))[0] == 0,
              "deposit for a client that re-sends its PIN")
        sig = gw.sign(key_a, ecdsa, d5, d.gateway_pin)
        verify_ec(d, cert_a, d5, sig, "context login with the gateway PIN, then C_Sign, on a deposit")
        for i in range(5):
            expect_ckr(lambda: gw.sign(key_a, ecdsa, d5, d.gateway_pin), P.CKR_PIN_INCORRECT,
                       f"gateway PIN as token, no deposit ({i + 1}): CKR_PIN_INCORRECT as before")
        # (over the garbage budget the gateway would be throttled; 5 < 20)
        d6 = dg("still unlocked")
        sig = gw.sign(key_a, ecdsa, d6, mint_token(d, "alice", kid["alice"], [("sha256", d6)]))
        verify_ec(d, cert_a, d6, sig, "the context-login path, unchanged, after all that: the key is not locked")

        # CKA_ALWAYS_AUTHENTICATE per gateway.
        aa = gw.session.getAttributeValue(key_a, [P.CKA_ALWAYS_AUTHENTICATE])[0]
        check(aa is True or aa == 1, f"default gateway: CKA_ALWAYS_AUTHENTICATE true ({aa})")
        plain_pin_file = os.path.join(d.tmp, "plain.pin")
        d.sc("gateway", "add", "plain-gw", "--out", plain_pin_file)
        plain_pin = open(plain_pin_file).read().strip()
        code_aa = ("import os,sys,json\n"
                   f"sys.path.insert(0,{os.path.dirname(os.path.abspath(__file__))!r}+'/../lib')\n"
                   "from scfixture import Gateway\nimport PyKCS11 as P\n"
                   "d=type('D',(),json.loads(sys.argv[1]))\ng=Gateway(d)\nk=g.key('alice')[0]\n"
                   "print(int(bool(g.session.getAttributeValue(k,[P.CKA_ALWAYS_AUTHENTICATE])[0])))\n")
        r = subprocess.run([sys.executable, "-c", code_aa,
                            json.dumps({"config": d.config, "module": d.module, "gateway_pin": plain_pin})],
                           env=d.env, capture_output=True, text=True, timeout=120)
        check(r.returncode == 0 and r.stdout.split()[-1] == "0",
              f"signd.deposit_gateways: plain-gw sees CKA_ALWAYS_AUTHENTICATE false ({r.stdout.strip()} {r.stderr[-300:]})")

        # Deposits are made through the service and seen by every service
        # sharing the store: restart it between deposit and signature.
        d7 = dg("across a restart")
        check(approve(d, mint_token(d, "alice", kid["alice"], [("sha256", d7)]))[0] == 0,
              "deposit before a restart")
        gw.close()
        d.restart_signd()
        gw = Gateway(d)
        key_a = gw.key("alice")[0]
        sig = gw.sign(key_a, ecdsa, d7, None)
        verify_ec(d, cert_a, d7, sig, "a deposit is in the store: consumed after the service restarted")

        # A deposit expires with its token (test builds move the clock).
        if os.environ.get("SMARTCERT_TEST_HOOKS") == "1":
            d8 = dg("expires while waiting")
            now = int(time.time())
            check(approve(d, mint_token(d, "alice", kid["alice"], [("sha256", d8)], not_after=now + 60))[0] == 0,
                  "a deposit valid for one more minute")
            d.set_time(now + 60 + 3600)
            expect_ckr(lambda: plain(key_a, ecdsa, d8), P.CKR_USER_NOT_LOGGED_IN,
                       "once its token has expired (plus the skew) the deposit is gone")
            d.set_time(None)
        gw.close()


if __name__ == "__main__":
    main()
