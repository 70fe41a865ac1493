#!/usr/bin/env python3
"""/healthz and readiness.  The daemon opens the store, the HSM session, the
OCSP signing key and the CA certificates before it listens, and installs the
responder right after the listener starts; /healthz answers 503 "starting"
only in that window, which no client can hit on purpose.  What is tested is
what follows from it: with the HSM unavailable (a token that does not exist)
or the configuration broken, the daemon exits with a clear message and
never listens, so it never reports ready; with everything in place /healthz
answers 200 "ok" and an OCSP request is answered at once."""
import os
import shutil
import socket
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (OCSPD, Responder, make_request, verify_response, check,  # noqa: E402
                      free_port, ocsp, enrol)
from scfixture import Deployment  # noqa: E402


def broken_config(d, name, text):
    """A copy of the deployment configuration (same directory, so its
    relative paths still hold) with `text` appended; the last value wins."""
    path = os.path.join(os.path.dirname(d.config), name)
    shutil.copyfile(d.config, path)
    with open(path, "a") as f:
        f.write("\n" + text + "\n")
    return path


def refused(d, config, want_rc, want_msg, what):
    port = free_port()
    p = subprocess.run([OCSPD, "--config", config, "--foreground",
                        "--listen", f"127.0.0.1:{port}"],
                       env=d.env, capture_output=True, text=True, timeout=60)
    check((p.returncode == want_rc if want_rc else p.returncode > 0) and want_msg in p.stderr,
          f"{what}: exit {want_rc or 'non-zero'} with '{want_msg}' "
          f"(got {p.returncode}: {p.stderr.strip()})")
    check('"ocspd.started"' not in p.stderr, f"{what}: never reported started")
    s = socket.socket()
    try:
        check(s.connect_ex(("127.0.0.1", port)) != 0, f"{what}: nothing listens on its port")
    finally:
        s.close()


with Deployment() as d:
    serial, _, _ = enrol(d, "rudy")
    refused(d, broken_config(d, "no-token.conf", "[ocsp]\nhsm_token = pkcs11:token=no-such-token"),
            5, "no backend token matches 'pkcs11:token=no-such-token'", "HSM token unavailable")
    refused(d, broken_config(d, "bad-validity.conf", "[ocsp]\nvalidity_seconds = 59"),
            6, "ocsp.validity_seconds must be between 60", "validity below the minimum")

    with Responder(d) as r:
        with urllib.request.urlopen(r.url + "/healthz", timeout=10) as u:
            check(u.status == 200 and u.read() == b"ok\n", "/healthz 200 ok once started")
        resp = verify_response(d, r.post(make_request(d, [serial])))
        check(resp.certificate_status == ocsp.OCSPCertStatus.GOOD,
              "ready means answering: the first request after /healthz 200 is good, verified")
print("all readiness checks passed")
