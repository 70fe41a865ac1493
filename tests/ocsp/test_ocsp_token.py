#!/usr/bin/python3
"""The OCSP responder is network-facing, so it logs in to a token of its
own: in the embedded deployment that token holds the OCSP signer key and
nothing else.  Logged in to it with the responder's PIN, one finds no
master wrapping key, no record or audit MAC key and no CA key; the backend
token's PIN is not the responder's; and the responder answers."""
import os
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from ocsptest import Responder, enrol, make_request, verify_response  # noqa: E402
from scfixture import Deployment, check, pykcs11_or_skip  # noqa: E402

P = pykcs11_or_skip()


def labels(module, conf, token, pin):
    os.environ["SOFTHSM2_CONF"] = conf
    lib = P.PyKCS11Lib()
    lib.load(module)
    for slot in lib.getSlotList(tokenPresent=True):
        if lib.getTokenInfo(slot).label.strip() == token:
            s = lib.openSession(slot)
            s.login(pin)
            out = set()
            for o in s.findObjects([]):
                v = s.getAttributeValue(o, [P.CKA_LABEL])[0]
                out.add(v if isinstance(v, str) else bytes(v).decode())
            return sorted(out)
    return None


with Deployment() as d:
    conf = os.path.join(d.dir, "hsm", "softhsm2.conf")
    ocsp_pin = open(os.path.join(d.dir, "secrets", "ocsp.pin")).read().strip()
    backend_pin = open(d.info["backend_pin_file"]).read().strip()
    check(d.conf_get("ocsp.hsm_token") == "pkcs11:token=smartcert-ocsp",
          "init names the responder's own token in ocsp.hsm_token")
    check(ocsp_pin != backend_pin, "the responder's PIN is not the backend token's")
    got = labels(d.info["backend_module"], conf, "smartcert-ocsp", ocsp_pin)
    check(got == ["smartcert-ocsp-signer"],
          f"the responder's token holds the OCSP signer key and nothing else ({got})")
    backend = labels(d.info["backend_module"], conf, "smartcert-backend", backend_pin)
    check("smartcert-master-wrap" in backend and "smartcert-ocsp-signer" not in backend,
          "the master key and the CA keys stay on the backend token, which the responder never opens")
    serial, _, _ = enrol(d, "olive")
    with Responder(d) as r:
        resp = verify_response(d, r.post(make_request(d, [serial])))
        check(str(resp.certificate_status).endswith("GOOD"), "the responder answers with its own key")
print("PASS")
