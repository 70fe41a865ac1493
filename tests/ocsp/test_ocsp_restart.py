#!/usr/bin/env python3
"""kill -9 under load and restart: serving resumes on the same port, and a
certificate revoked while the daemon was down (after its "good" response
had been pre-signed and stored) is answered revoked by the first response
after the restart; the pre-signed store entries of the others survive."""
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (Responder, make_request, verify_response, statuses, check,  # noqa: E402
                      ocsp, enrol, free_port, wait_stored)
from scfixture import Deployment  # noqa: E402

GOOD = ocsp.OCSPCertStatus.GOOD
REVOKED = ocsp.OCSPCertStatus.REVOKED

with Deployment() as d:
    f_serial, f_hex, _ = enrol(d, "frank")
    g_serial, g_hex, _ = enrol(d, "grace")
    port = free_port()
    r = Responder(d, port=port).start()
    for s in (f_serial, g_serial):
        check(statuses(verify_response(d, r.post(make_request(d, [s]))))[0][1] == GOOD,
              "good before the crash")
    check(wait_stored(r, 2), "both responses stored before the crash")

    counts = {"ok": 0, "err": 0, "stale": 0}
    stop = threading.Event()
    revoked_at = [None]
    req_f = make_request(d, [f_serial])

    def load():
        url = f"http://127.0.0.1:{port}/ocsp"
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                rq = urllib.request.Request(url, data=req_f, method="POST",
                                            headers={"Content-Type": "application/ocsp-request"})
                with urllib.request.urlopen(rq, timeout=5) as u:
                    resp = ocsp.load_der_ocsp_response(u.read())
                counts["ok"] += 1
                if revoked_at[0] is not None and resp.certificate_status == GOOD:
                    counts["stale"] += 1
            except (urllib.error.URLError, ConnectionError, OSError):
                counts["err"] += 1
                time.sleep(0.01)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while counts["ok"] < 50 and time.monotonic() - t0 < 20:
        time.sleep(0.05)
    check(counts["ok"] >= 50, f"{counts['ok']} answers under load before the crash")
    r.proc.send_signal(signal.SIGKILL)
    r.proc.wait()
    check(r.proc.returncode == -signal.SIGKILL, "daemon killed with SIGKILL under load")

    # revoke while it is down: the stored "good" entry must not come back
    d.sc("ca", "revoke", "--serial", f_hex, "--reason", "cessationOfOperation")
    revoked_at[0] = time.monotonic()
    before = counts["ok"]
    r2 = Responder(d, port=port).start()
    s = statuses(verify_response(d, r2.post(req_f)))[0]
    check(s[1] == REVOKED and s[2].name == "cessation_of_operation",
          "first answer after restart: revoked cessationOfOperation")
    t0 = time.monotonic()
    while counts["ok"] < before + 50 and time.monotonic() - t0 < 20:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    check(counts["ok"] >= before + 50, f"load resumed after restart ({counts['ok'] - before} answers)")
    check(counts["stale"] == 0, "no stale good answer for the revoked certificate")
    check(statuses(verify_response(d, r2.post(make_request(d, [g_serial]))))[0][1] == GOOD,
          "the other certificate still good")
    m = r2.metrics()
    check('smartcert_ocsp_presigned_total{event="hit"} 0' not in m,
          "pre-signed entries written before the crash are served after it")
    check(r2.stop() == 0, "clean stop")
print("all restart checks passed")
