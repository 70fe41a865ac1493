#!/usr/bin/python3
"""A gateway on another host reaches the signing service over TCP with
mutually authenticated TLS (shown on 127.0.0.1):

* the module, configured with `gateway.service = tls:HOST:PORT` and its
  client certificate, signs with a token;
* a client with no certificate, or with one from another CA, is refused in
  the handshake: no request of it is ever answered;
* the signature's audit record names the gateway and its certificate;
* a gateway process that keeps SIGPIPE's default action (Python ignores it;
  most C programs do not) survives the service stopping under it: a C_Sign
  of 100 KiB, more than one TLS record, gets an error, not a SIGPIPE."""
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import (Deployment, Gateway, check, fail, free_port, main_or_child, mint_token,  # noqa: E402
                       pykcs11_or_skip, run_json_child, skip_unless, wire_hello)

P = pykcs11_or_skip()

def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(tmp, name):
    key, crt = os.path.join(tmp, f"{name}.key"), os.path.join(tmp, f"{name}.pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={name}")
    return key, crt


def issue(tmp, ca, name, ext):
    key, csr, crt = (os.path.join(tmp, f"{name}.{x}") for x in ("key", "csr", "pem"))
    extf = os.path.join(tmp, f"{name}.ext")
    with open(extf, "w") as f:
        f.write(ext + "\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    openssl("x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-CAcreateserial",
            "-out", crt, "-days", "2", "-extfile", extf)
    os.chmod(key, 0o600)
    return key, crt


def raw_try(port, ca_pem, cert=None):
    """HELLO over TLS; 'answered' or what stopped it."""
    ctx = ssl.create_default_context(cafile=ca_pem)
    if cert:
        ctx.load_cert_chain(cert[1], cert[0])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(wire_hello())
                data = s.recv(64)
                return "answered" if len(data) >= 8 else "closed"
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return f"refused ({type(e).__name__})"


def child_service_stops(spec):
    """SIGPIPE at its default; C_SignInit, wait for the parent to stop the
    service, then C_Sign with a large input."""
    import signal
    import PyKCS11 as P
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    gw = Gateway(SimpleNamespace(config=spec["conf"], module=spec["module"],
                                 gateway_pin=spec["pin"]))
    s = gw.session
    key = s.findObjects([(P.CKA_CLASS, P.CKO_PRIVATE_KEY), (P.CKA_LABEL, spec["user"])])[0]
    rv = s.lib.C_SignInit(s.session, P.Mechanism(P.CKM_ECDSA_SHA256, None).to_native(), key)
    print("ready" if rv == P.CKR_OK else f"C_SignInit {rv:#x}", flush=True)
    sys.stdin.readline()
    time.sleep(1)         # the service's side of the connection is closed by now
    buf = P.ckbytelist([0] * 128)
    rv = s.lib.C_Sign(s.session, P.ckbytelist(bytes(100 * 1024)), buf)
    print(json.dumps({"rv": P.CKR.get(rv, rv)}), flush=True)


def child(spec):
    if spec.get("mode") == "service-stops":
        return child_service_stops(spec)
    import PyKCS11 as P
    # The gateway's own configuration (the TLS service), not the deployment's.
    gw = Gateway(SimpleNamespace(config=spec["conf"], module=spec["module"],
                                 gateway_pin=spec["pin"]))
    s = gw.session
    key = s.findObjects([(P.CKA_CLASS, P.CKO_PRIVATE_KEY), (P.CKA_LABEL, spec["user"])])[0]
    mech = P.Mechanism(P.CKM_ECDSA, None)
    s.lib.C_SignInit(s.session, mech.to_native(), key)
    s.login(spec["token"], user_type=P.CKU_CONTEXT_SPECIFIC)
    buf = P.ckbytelist([0] * 64)
    rv = s.lib.C_Sign(s.session, P.ckbytelist(bytes.fromhex(spec["digest"])), buf)
    print(json.dumps({"rv": P.CKR.get(rv, rv), "sig": bytes(buf).hex()}))


def main():
    skip_unless("openssl")
    with Deployment(prefix="signd-tls-") as d:
        tmp = d.tmp
        ca = make_ca(tmp, "gateway-ca")
        rogue = make_ca(tmp, "rogue-ca")
        server = issue(tmp, ca, "signd", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
        client = issue(tmp, ca, "gateway-1", "extendedKeyUsage=clientAuth")
        outsider = issue(tmp, rogue, "outsider", "extendedKeyUsage=clientAuth")
        port = free_port()
        d.conf_set("signd.tls_listen", f"127.0.0.1:{port}", restart=False)
        d.conf_set("signd.tls_cert", server[1], restart=False)
        d.conf_set("signd.tls_key", server[0], restart=False)
        d.conf_set("signd.tls_client_ca", ca[1])
        enrolled = d.enrol("remote", "p256")
        kid = enrolled.get("key_id") or enrolled["keys"][0]["key_id"]

        check(raw_try(port, ca[1], client) == "answered", "a gateway certificate from the gateway CA is served")
        r = raw_try(port, ca[1])
        check(r != "answered", f"no client certificate: refused in the handshake ({r})")
        r = raw_try(port, ca[1], outsider)
        check(r != "answered", f"a certificate from another CA: refused ({r})")

        gwconf = os.path.join(tmp, "gateway-tls.conf")
        with open(gwconf, "w") as f:
            f.write(f"[gateway]\nservice = tls:127.0.0.1:{port}\ntls_cert = {client[1]}\n"
                    f"tls_key = {client[0]}\ntls_ca = {ca[1]}\n")
        dg = hashlib.sha256(b"signed from another host").digest()
        spec = {"conf": gwconf, "module": d.module, "pin": d.gateway_pin, "user": "remote",
                "digest": dg.hex(), "token": mint_token(d, "remote", kid, [("sha256", dg)])}
        env = {k: v for k, v in d.env.items() if k != "SMARTCERT_CONF"}
        res = run_json_child(__file__, spec, env)
        check(res["rv"] == "CKR_OK", f"the module signs over TLS ({res['rv']})")
        recs = [x for x in d.audit("remote") if x.get("kind") == "sign" and x.get("outcome") == "ok"]
        check(len(recs) == 1 and recs[0].get("actor", "").startswith("gateway:default cert="),
              f"the audit record names the gateway and its certificate ({recs[-1].get('actor') if recs else None})")

        # The service stops while a gateway with SIGPIPE at its default waits.
        spec = dict(spec, mode="service-stops")
        p = subprocess.Popen([sys.executable, __file__, "child", json.dumps(spec)], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        ready = p.stdout.readline().strip()
        check(ready == "ready", f"the gateway has a sign operation open over TLS ({ready})")
        d.stop_signd()
        out, err = p.communicate("go\n", timeout=120)
        check(p.returncode == 0, f"the gateway process survives the service stopping "
              f"(exit {p.returncode}{', SIGPIPE' if p.returncode == -13 else ''}): {err[-300:]}")
        res = json.loads(out.splitlines()[-1]) if out.strip() else {}
        check(res.get("rv") in ("CKR_DEVICE_REMOVED", "CKR_DEVICE_ERROR"),
              f"and C_Sign says the device is gone ({res.get('rv')})")
        d.start_signd()


if __name__ == "__main__":
    main_or_child(main, child)
