#!/usr/bin/python3
"""What a gateway sees besides signing, driven with PyKCS11:

1. C_GetMechanismList / C_GetMechanismInfo are truthful: exactly the twelve
   signing mechanisms, sign-only flags and the key sizes the store can hold;
   C_SignInit accepts each listed mechanism with its key type and nothing
   else.
2. Searches: by CKA_ID, CKA_LABEL, class, CKA_SERIAL_NUMBER + CKA_ISSUER;
   an empty template streams in small batches with no duplicates; private
   keys are invisible before the gateway login.
3. Object handles are the same in every session and in another process.
4. The cache of unwrapped keys drops a key when its certificate is put on
   hold or revoked by an officer in another process (read from the
   revocation log at the next signature), and when the key is refused for
   its state.
5. A signature is returned only after its replay and audit records are
   committed: a gateway killed right after C_Sign returns leaves both.

Children are this file run with `child-cache` / `child-durable` /
`child-handle`; they print one JSON document on stdout."""
import hashlib
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, Gateway, check, expect_ckr, fail, mint_token  # noqa: E402

try:
    import PyKCS11 as P
    from cryptography import x509
except ImportError as e:
    print(f"SKIP: {e} (install python3-pykcs11 python3-cryptography)", file=sys.stderr)
    sys.exit(77)

EC_FLAGS = P.CKF_EC_F_P | P.CKF_EC_NAMEDCURVE | P.CKF_EC_UNCOMPRESS
MECHS = {  # mechanism: (is RSA, hash for PSS params or None)
    P.CKM_ECDSA: (False, None), P.CKM_ECDSA_SHA256: (False, None),
    P.CKM_ECDSA_SHA384: (False, None), P.CKM_ECDSA_SHA512: (False, None),
    P.CKM_RSA_PKCS: (True, None), P.CKM_SHA256_RSA_PKCS: (True, None),
    P.CKM_SHA384_RSA_PKCS: (True, None), P.CKM_SHA512_RSA_PKCS: (True, None),
    P.CKM_RSA_PKCS_PSS: (True, "sha256"), P.CKM_SHA256_RSA_PKCS_PSS: (True, "sha256"),
    P.CKM_SHA384_RSA_PKCS_PSS: (True, "sha384"), P.CKM_SHA512_RSA_PKCS_PSS: (True, "sha512"),
}
PSS = {"sha256": (P.CKM_SHA256, P.CKG_MGF1_SHA256, 32), "sha384": (P.CKM_SHA384, P.CKG_MGF1_SHA384, 48),
       "sha512": (P.CKM_SHA512, P.CKG_MGF1_SHA512, 64)}
ECDSA = P.Mechanism(P.CKM_ECDSA, None)


def mechanism(ckm):
    h = MECHS[ckm][1]
    return P.RSA_PSS_Mechanism(ckm, *PSS[h]) if h else P.Mechanism(ckm, None)


def handles(objs):
    return sorted(int(o.value()) for o in objs)


def stream(s, template, batch):
    """C_FindObjectsInit + C_FindObjects(batch) until empty: (handles, largest batch)."""
    rv = s.lib.C_FindObjectsInit(s.session, s._template2ckattrlist(template))
    if rv != P.CKR_OK:
        raise P.PyKCS11Error(rv)
    out, largest = [], 0
    result = P.LowLevel.ckobjlist(batch)
    while True:
        rv = s.lib.C_FindObjects(s.session, result)
        if rv != P.CKR_OK:
            raise P.PyKCS11Error(rv)
        largest = max(largest, len(result))
        if len(result) == 0:
            break
        out.extend(int(x.value()) for x in result)
    s.lib.C_FindObjectsFinal(s.session)
    return out, largest


def child_gateway(spec):
    d = Deployment.__new__(Deployment)
    d.config, d.module, d.gateway_pin = spec["config"], spec["module"], spec["pin"]
    d.demo_key_path = lambda: spec["demo_key"]
    d.conf_get = lambda key, default=None: spec["conf"].get(key, default)
    return d, Gateway(d)


def try_sign(d, gw, user, dg):
    try:
        hkey, kid, _ = gw.key(user)
        gw.sign(hkey, ECDSA, dg, mint_token(d, user, kid, [("sha256", dg)]))
        return "CKR_OK"
    except P.PyKCS11Error as e:
        return P.CKR.get(e.value, str(e.value))


def child_cache(spec):
    """Sign, let an officer act through the CLI, sign again; the module's
    debug lines on stderr say which cache entries were dropped and why."""
    d, gw = child_gateway(spec)
    env = dict(os.environ, SMARTCERT_CONF=spec["config"])
    officer = lambda *a: subprocess.run([spec["smartcert"], *a], env=env, capture_output=True, text=True,
                                        check=True)
    dg = hashlib.sha256(b"cache").digest()
    res = {}
    for u in ("ka", "kb", "kc", "kd"):
        res["first-" + u] = try_sign(d, gw, u, dg)
    step("suspend ka", spec)
    officer("ca", "suspend", "--user", "ka")
    res["kb-after-suspend"] = try_sign(d, gw, "kb", dg)
    step("revoke kc", spec)
    officer("ca", "revoke", "--user", "kc", "--reason", "keyCompromise")
    res["kb-after-revoke"] = try_sign(d, gw, "kb", dg)
    step("suspend kd without hold", spec)
    officer("--config", spec["nohold_config"], "ca", "suspend", "--user", "kd")
    res["kb-after-nohold"] = try_sign(d, gw, "kb", dg)
    step("sign kd", spec)
    res["kd-suspended"] = try_sign(d, gw, "kd", dg)
    print(json.dumps(res), flush=True)


def child_durable(spec):
    """Sign once, print the signature and die by SIGKILL at once: nothing
    after C_Sign's return gets a chance to write anything."""
    d, gw = child_gateway(spec)
    hkey, kid, _ = gw.key("dur")
    dg = bytes.fromhex(spec["digest"])
    sig = gw.sign(hkey, ECDSA, dg, spec["token"])
    sys.stdout.write(json.dumps({"sig": sig.hex()}) + "\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def child_handle(spec):
    d, gw = child_gateway(spec)
    print(json.dumps({"handle": int(gw.key(spec["user"])[0].value())}), flush=True)


def step(name, spec):
    """Mark the service's log: its debug lines that follow belong to this step."""
    with open(spec["signd_log"], "a") as f:
        f.write(f"# step: {name}\n")


def run_child(d, mode, extra=None, debug=False):
    spec = {"config": d.config, "module": d.module, "pin": d.gateway_pin, "demo_key": d.demo_key_path(),
            "signd_log": d.signd_log,
            "smartcert": os.environ.get("SMARTCERT_BIN", "smartcert"),
            "conf": {k: d.conf_get(k) for k in ("authz.issuer", "authz.audience") if d.conf_get(k)}}
    spec.update(extra or {})
    env = dict(d.env)
    if debug:
        env["SMARTCERT_PKCS11_DEBUG"] = "1"
    return subprocess.run([sys.executable, __file__, mode, json.dumps(spec)], env=env, capture_output=True,
                          text=True, timeout=300)


def mechanisms(d, gw, keys):
    s = gw.session
    listed = set(gw.lib.getMechanismList(gw.slot))
    check(listed == {P.CKM[m] for m in MECHS}, f"C_GetMechanismList: exactly the 12 signing mechanisms ({len(listed)})")
    forbidden = (P.CKF_VERIFY | P.CKF_ENCRYPT | P.CKF_DECRYPT | P.CKF_DIGEST | P.CKF_SIGN_RECOVER |
                 P.CKF_VERIFY_RECOVER | P.CKF_WRAP | P.CKF_UNWRAP | P.CKF_GENERATE | P.CKF_GENERATE_KEY_PAIR |
                 P.CKF_DERIVE | P.CKF_HW)
    for m, (rsa, _) in MECHS.items():
        info = gw.lib.getMechanismInfo(gw.slot, P.CKM[m])
        want = (2048, 3072) if rsa else (256, 384)
        check(info.flags & P.CKF_SIGN and not info.flags & forbidden and
              (info.flags & EC_FLAGS) == (0 if rsa else EC_FLAGS) and
              (info.ulMinKeySize, info.ulMaxKeySize) == want,
              f"{P.CKM[m]}: sign only, key sizes {want}")
        # Truthful: C_SignInit accepts it with its key type, and only that.
        for user, is_rsa in (("rsa", True), ("ec", False)):
            s2 = gw.new_session()
            mech = mechanism(m)        # keeps the PSS parameters alive
            rv = s2.lib.C_SignInit(s2.session, mech.to_native(), keys[user][0])
            want_rv = P.CKR_OK if is_rsa == rsa else P.CKR_KEY_TYPE_INCONSISTENT
            check(rv == want_rv, f"{P.CKM[m]} on the {user} key: C_SignInit {P.CKR.get(rv, rv)}")
            s2.closeSession()
    for m in (P.CKM_SHA1_RSA_PKCS, P.CKM_ECDSA_SHA1, P.CKM_RSA_X_509, P.CKM_SHA256, P.CKM_ECDSA_SHA224,
              P.CKM_SHA256_HMAC):
        expect_ckr(lambda: gw.lib.getMechanismInfo(gw.slot, P.CKM[m]), P.CKR_MECHANISM_INVALID,
                   f"{P.CKM[m]} is not offered")
        rv = s.lib.C_SignInit(s.session, P.Mechanism(m, None).to_native(), keys["rsa"][0])
        check(rv == P.CKR_MECHANISM_INVALID, f"C_SignInit {P.CKM[m]}: CKR_MECHANISM_INVALID")


def searches(d, gw, users):
    s = gw.session
    n = len(users)
    kid = bytes(s.getAttributeValue(gw.key("ec")[0], [P.CKA_ID])[0])
    by_id = s.findObjects([(P.CKA_ID, kid)])
    classes = sorted(s.getAttributeValue(o, [P.CKA_CLASS])[0] for o in by_id)
    check(classes == sorted([P.CKO_PRIVATE_KEY, P.CKO_PUBLIC_KEY, P.CKO_CERTIFICATE]),
          "CKA_ID finds the user's private key, public key and certificate")
    by_label = s.findObjects([(P.CKA_LABEL, "ec")])
    check(handles(by_label) == handles(by_id), "CKA_LABEL (user id) finds the same three objects")
    check(s.findObjects([(P.CKA_ID, b"k-no-such-key")]) == [] and s.findObjects([(P.CKA_LABEL, "nobody")]) == [],
          "an unknown CKA_ID / CKA_LABEL finds nothing")
    for cls in (P.CKO_PRIVATE_KEY, P.CKO_PUBLIC_KEY, P.CKO_CERTIFICATE):
        got = s.findObjects([(P.CKA_CLASS, cls)])
        check(len(got) == n and all(s.getAttributeValue(o, [P.CKA_CLASS])[0] == cls for o in got),
              f"class {P.CKO[cls]} finds one object per user ({len(got)})")
    check(s.findObjects([(P.CKA_CLASS, P.CKO_DATA)]) == [], "class CKO_DATA finds nothing")
    # Certificate by issuer and serial, as NSS and CMS tools look it up.
    cert = [o for o in by_id if s.getAttributeValue(o, [P.CKA_CLASS])[0] == P.CKO_CERTIFICATE][0]
    serial, issuer = (bytes(v) for v in s.getAttributeValue(cert, [P.CKA_SERIAL_NUMBER, P.CKA_ISSUER]))
    der = bytes(s.getAttributeValue(cert, [P.CKA_VALUE])[0])
    xc = x509.load_der_x509_certificate(der)
    check(int.from_bytes(serial[2:], "big") == xc.serial_number and issuer == xc.issuer.public_bytes(),
          "CKA_SERIAL_NUMBER (DER INTEGER) and CKA_ISSUER match the certificate")
    got = s.findObjects([(P.CKA_CLASS, P.CKO_CERTIFICATE), (P.CKA_ISSUER, issuer), (P.CKA_SERIAL_NUMBER, serial)])
    check(handles(got) == [int(cert.value())], "CKA_ISSUER + CKA_SERIAL_NUMBER finds exactly that certificate")
    other_issuer = x509.Name.from_rfc4514_string("CN=someone else").public_bytes()
    check(s.findObjects([(P.CKA_ISSUER, other_issuer), (P.CKA_SERIAL_NUMBER, serial)]) == [],
          "the same serial under another issuer finds nothing")
    check(s.findObjects([(P.CKA_SERIAL_NUMBER, b"\x02\x01")]) == [], "a malformed serial finds nothing")
    # An empty template streams: small batches, every object once.
    got, largest = stream(s, [], 2)
    check(len(got) == 3 * n and len(set(got)) == len(got) and largest == 2,
          f"empty template: {len(got)} handles in batches of at most 2, no duplicates (3 per user)")
    got1, _ = stream(s, [], 1)
    check(sorted(got1) == sorted(got), "batches of 1 return the same set")
    return got


def main():
    if len(sys.argv) == 3 and sys.argv[1].startswith("child-"):
        {"child-cache": child_cache, "child-durable": child_durable,
         "child-handle": child_handle}[sys.argv[1]](json.loads(sys.argv[2]))
        return
    with Deployment(prefix="p11-objects-") as d:
        # The key cache lives in the signing service: its debug lines say
        # what it drops (checked below).
        with open(d.config, "a") as f:
            f.write("\n[signd]\ndebug = yes\n")
        d.restart_signd()
        d.enrol("ec", "p256")
        d.enrol("rsa", "rsa2048")
        for u in ("ka", "kb", "kc", "kd", "dur"):
            d.enrol(u, "p256")
        users = ["ec", "rsa", "ka", "kb", "kc", "kd", "dur"]

        # Before the gateway login: public objects only.
        gw = Gateway(d, login=False)
        s = gw.session
        pre, _ = stream(s, [], 3)
        check(len(pre) == 2 * len(users), f"before login an empty template streams public keys and certificates only "
              f"({len(pre)})")
        check(s.findObjects([(P.CKA_CLASS, P.CKO_PRIVATE_KEY)]) == [], "before login no private key is found")
        gw.anchor.login(d.gateway_pin)

        keys = {u: gw.key(u) for u in ("ec", "rsa")}
        mechanisms(d, gw, keys)
        all_handles = searches(d, gw, users)

        # Handles: the same in another session and another process.
        h_ec = int(keys["ec"][0].value())
        s2 = gw.new_session()
        check(int(gw.key("ec", session=s2)[0].value()) == h_ec, "the same key handle in a second session")
        got, _ = stream(s2, [], 5)
        check(sorted(got) == sorted(all_handles), "the same handles for every object in a second session")
        r = run_child(d, "child-handle", {"user": "ec"})
        check(r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["handle"] == h_ec,
              f"the same key handle in another process ({r.stdout.strip()[-60:]} {r.stderr.strip()[-200:]})")
        dg = hashlib.sha256(b"handle from another session").digest()
        sig = gw.sign(keys["ec"][0], ECDSA, dg, mint_token(d, "ec", keys["ec"][1], [("sha256", dg)]), session=s2)
        check(len(sig) == 64, "a handle found in one session signs in another")
        s2.closeSession()

        # Key cache invalidation (another process, module debug lines).
        # The same configuration with suspensions that do not hold the
        # certificate, beside the original so relative paths still resolve.
        nohold = os.path.join(os.path.dirname(d.config), "nohold.conf")
        with open(d.config) as f:
            text = f.read()
        check("suspend_holds = yes" in text, "the deployment holds certificates of suspended accounts")
        with open(nohold, "w") as f:
            f.write(text.replace("suspend_holds = yes", "suspend_holds = no"))
        r = run_child(d, "child-cache", {"nohold_config": nohold}, debug=True)
        if r.returncode != 0:
            fail(f"cache child failed: {r.stderr[-2000:]}")
        res = json.loads(r.stdout.splitlines()[-1])
        check(all(res["first-" + u] == "CKR_OK" for u in ("ka", "kb", "kc", "kd")), f"four keys signed: {res}")
        kid = {u: gw.key(u)[1] for u in ("ka", "kb", "kd")}
        with open(d.signd_log) as f:
            slog = f.read()
        steps = slog.split("# step: ")
        by_step = {st.split("\n", 1)[0]: st for st in steps[1:]}
        check(f"dropped key {kid['ka']} (certificate status changed)" in by_step.get("suspend ka", ""),
              "a hold committed by the CLI drops the suspended key's cache entry at the next signature")
        check("dropped key" in by_step.get("revoke kc", "") and res["kb-after-revoke"] == "CKR_OK",
              "a revocation committed by the CLI drops the revoked key's cache entry")
        check("dropped key" not in by_step.get("suspend kd without hold", ""),
              "a suspension without a hold leaves no revocation-log event (nothing dropped yet)")
        check(res["kd-suspended"] == "CKR_KEY_FUNCTION_NOT_PERMITTED" and
              f"dropped key {kid['kd']} (refused for its state)" in by_step.get("sign kd", ""),
              "... and the refusal of the suspended account drops its cache entry")
        check(res["kb-after-suspend"] == "CKR_OK" and f"dropped key {kid['kb']}" not in slog,
              "other keys stay cached and sign")

        # Durability: the replay and audit records exist once C_Sign returned.
        hkey, dkid, _ = gw.key("dur")
        dg = hashlib.sha256(b"durable").digest()
        token = mint_token(d, "dur", dkid, [("sha256", dg)])
        r = run_child(d, "child-durable", {"digest": dg.hex(), "token": token})
        check(r.returncode == -signal.SIGKILL and '"sig"' in r.stdout,
              "the gateway returned a signature and was killed at once")
        recs = [x for x in d.audit("dur") if x.get("kind") == "sign" and x.get("outcome") == "ok"]
        check(len(recs) == 1 and recs[0].get("digest") == dg.hex(),
              "the killed gateway's signature has its audit record")
        expect_ckr(lambda: gw.sign(hkey, ECDSA, dg, token), P.CKR_PIN_EXPIRED,
                   "and its token is recorded as used (replay refused)")
        gw.close()


if __name__ == "__main__":
    main()
