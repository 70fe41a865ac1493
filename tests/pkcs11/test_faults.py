#!/usr/bin/python3
"""Operational faults seen by a gateway: each one gives a clear CK_RV at the
call where it shows, never a crash or a hang.  Every case runs in a fresh
gateway process (the module keeps its state per process).

  wrong gateway PIN            C_Login(CKU_USER) -> CKR_PIN_INCORRECT
  wrong backend PIN            C_Login(CKU_USER) -> CKR_DEVICE_ERROR
  backend module path missing  C_Login(CKU_USER) -> CKR_DEVICE_ERROR
  no / unreadable config       C_Initialize      -> CKR_GENERAL_ERROR
  store directory unreadable   C_Initialize      -> an error, no crash
    (root ignores file modes: run in an unprivileged user namespace when
    available, else that case is reported as not run)
and after each fault is repaired, the same deployment signs again."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, Gateway, check, fail, mint_token  # noqa: E402

try:
    import PyKCS11 as P
except ImportError as e:
    print(f"SKIP: {e} (install python3-pykcs11)", file=sys.stderr)
    sys.exit(77)


def child(spec):
    """Go as far as a signature; print the step reached and its CK_RV."""
    res = {"step": "C_Initialize", "ckr": None}
    try:
        d = Deployment.__new__(Deployment)
        d.config, d.module, d.gateway_pin = spec["config"], spec["module"], spec["pin"]
        os.environ.pop("SOFTHSM2_CONF", None)
        if spec.get("no_conf"):
            os.environ.pop("SMARTCERT_CONF", None)
        else:
            os.environ["SMARTCERT_CONF"] = spec["config"]
        lib = P.PyKCS11Lib()
        lib.load(d.module)
        res["step"] = "C_OpenSession"
        slot = lib.getSlotList(tokenPresent=True)[0]
        s = lib.openSession(slot, P.CKF_SERIAL_SESSION)
        res["step"] = "C_Login(CKU_USER)"
        s.login(d.gateway_pin)
        res["step"] = "sign"
        gw = Gateway.__new__(Gateway)
        gw.P, gw.lib, gw.slot, gw.session, gw.anchor = P, lib, slot, s, s
        hkey, kid, _ = gw.key(spec["user"])
        dg = hashlib.sha256(b"fault test").digest()
        gw.sign(hkey, P.Mechanism(P.CKM_ECDSA, None), dg, mint_token(d, spec["user"], kid, [("sha256", dg)]))
        res["step"] = "done"
        res["ckr"] = "CKR_OK"
    except P.PyKCS11Error as e:
        res["ckr"] = P.CKR.get(e.value, str(e.value))
    print(json.dumps(res))


def attempt(d, prefix=(), **extra):
    spec = {"config": d.config, "module": d.module, "pin": d.gateway_pin, "user": "faulty"}
    spec.update(extra)
    r = subprocess.run([*prefix, sys.executable, __file__, "child", json.dumps(spec)], capture_output=True,
                       text=True, timeout=120, env=d.env)
    if r.returncode != 0:
        fail(f"the gateway process died (exit {r.returncode}): {r.stderr[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def expect(d, what, step, ckrs, **extra):
    res = attempt(d, **extra)
    check(res["step"] == step and res["ckr"] in ckrs,
          f"{what}: {step} -> {res['ckr']} (want {'/'.join(ckrs)}; reached {res['step']})")


def main():
    with Deployment(prefix="p11-faults-") as d:
        d.enrol("faulty", "p256")
        res = attempt(d)
        check(res == {"step": "done", "ckr": "CKR_OK"}, "baseline: a fresh gateway process signs")

        expect(d, "wrong gateway PIN", "C_Login(CKU_USER)", ["CKR_PIN_INCORRECT"], pin="0000-wrong")

        # Wrong backend PIN: the module cannot log in to its HSM.
        pin_file = os.path.join(d.dir, "secrets", "backend.pin")
        with open(pin_file) as f:
            good = f.read()
        with open(pin_file, "w") as f:
            f.write("99999999\n")
        os.chmod(pin_file, 0o600)
        d.restart_signd()
        try:
            expect(d, "wrong backend PIN", "C_Login(CKU_USER)", ["CKR_DEVICE_ERROR"])
        finally:
            with open(pin_file, "w") as f:
                f.write(good)
        check(attempt(d)["ckr"] == "CKR_OK", "backend PIN restored: signs again (no restart)")

        # Backend module path that does not exist.
        with open(d.config) as f:
            conf = f.read()
        d.conf_set("hsm.module", os.path.join(d.tmp, "no-such-hsm.so"))
        try:
            expect(d, "backend module missing", "C_Login(CKU_USER)", ["CKR_DEVICE_ERROR"])
        finally:
            with open(d.config, "w") as f:
                f.write(conf)
        d.restart_signd()
        check(attempt(d)["ckr"] == "CKR_OK", "backend module restored: signs again")

        # No configuration at all, and a configuration that does not parse.
        expect(d, "no SMARTCERT_CONF", "C_Initialize", ["CKR_GENERAL_ERROR"], no_conf=True)
        bad_conf = os.path.join(d.tmp, "broken.conf")
        with open(bad_conf, "w") as f:
            f.write("[store\npath = \n")
        expect(d, "unparsable configuration", "C_Initialize", ["CKR_GENERAL_ERROR"], config=bad_conf)
        expect(d, "configuration file missing", "C_Initialize", ["CKR_GENERAL_ERROR"],
               config=os.path.join(d.tmp, "missing.conf"))

        # The signing service stopped: a clear refusal at C_OpenSession, no hang.
        d.stop_signd()
        try:
            res = attempt(d)
        finally:
            d.start_signd()
        check(res == {"step": "C_OpenSession", "ckr": "CKR_DEVICE_ERROR"},
              f"service stopped: {res['step']} -> {res['ckr']}")
        check(attempt(d)["ckr"] == "CKR_OK", "after every fault is repaired the deployment signs again")

        # The CLI gateway names the faults in words.
        doc = os.path.join(d.tmp, "doc.txt")
        with open(doc, "w") as f:
            f.write("x\n")
        env = dict(d.env, SC_WRONG_PIN="nope")
        r = d.sc("sign", "--user", "faulty", "--in", doc, "--authorize", "--gateway-pin-source",
                 "env:SC_WRONG_PIN", env=env, check=False)
        check(r.returncode == 4 and "gateway PIN was rejected" in r.stderr, "smartcert sign: wrong gateway PIN named")
        d.conf_set("hsm.module", os.path.join(d.tmp, "no-such-hsm.so"))
        try:
            r = d.sc("sign", "--user", "faulty", "--in", doc, "--authorize", check=False)
            check(r.returncode == 5 and "CKR_DEVICE_ERROR" in r.stderr and "backend HSM" in r.stderr,
                  "smartcert sign: backend HSM unreachable named (exit 5)")
        finally:
            with open(d.config, "w") as f:
                f.write(conf)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        child(json.loads(sys.argv[2]))
    else:
        main()
