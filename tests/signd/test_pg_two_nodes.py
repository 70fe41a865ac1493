#!/usr/bin/env python3
"""Two signing services and two OCSP responders, separate processes on one
PostgreSQL store, and the CA beside them.  Both services sign; a revocation
committed through the CA is refused by each service's next signature and
answered `revoked` by both responders, which had the answer `good` in
memory (dropped on the change's notification), and the time from the revocation's
commit to the last of those is printed (goal < 100 ms).  Gateways naming
both services carry on with one when the other is killed mid-load.
Afterwards no token was spent twice, every returned signature has its
audit record, and the audit chain verifies.  Run under
tests/lib/with-postgres.sh."""
import base64
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check, free_port, skip_unless  # noqa: E402

skip_unless("openssl")
try:
    from cryptography.x509 import ocsp
except ImportError:
    print("SKIP: python3-cryptography missing", file=sys.stderr)
    sys.exit(77)
if os.environ.get("SC_TEST_STORE") != "postgresql":
    print("SKIP: run under tests/lib/with-postgres.sh", file=sys.stderr)
    sys.exit(77)
OCSPD = os.environ.get("SMARTCERT_OCSPD_BIN", "smartcert-ocspd")
SIGND = os.environ.get("SMARTCERT_SIGND_BIN", "smartcert-signd")


def wait_for(pred, what, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.02)
    check(False, f"{what} within {timeout} s")


with Deployment(signd=False) as d:
    # node B: its own service socket; everything else the same deployment
    conf = open(d.config).read()
    conf_b = os.path.join(d.dir, "smartcert-b.conf")
    text_b = conf.replace("socket = run/signd.sock", "socket = run/signd-b.sock") \
                 .replace("service = unix:run/signd.sock", "service = unix:run/signd-b.sock")
    check(text_b.count("signd-b.sock") == 2, "node B's configuration names its own socket")
    with open(conf_b, "w") as f:
        f.write(text_b)
    os.chmod(conf_b, 0o600)
    env_b = dict(d.env, SMARTCERT_CONF=conf_b)

    d.start_signd()
    log_b = open(os.path.join(d.tmp, "signd-b.log"), "ab")
    signd_b = subprocess.Popen([SIGND, "--config", conf_b], env=env_b, stdout=log_b, stderr=log_b)
    ocspds = []
    try:
        wait_for(lambda: os.path.exists(os.path.join(d.dir, "run", "signd-b.sock")), "node B's service up")
        for u, idn in (("anna", "T1000001"), ("ben", "T1000002")):
            d.sc("ca", "enrol", "--user", u, "--name", u.upper() + " Two-Nodes", "--id-number-source",
                 "env:IDN", env=dict(d.env, IDN=idn))
        doc = os.path.join(d.tmp, "doc.txt")
        with open(doc, "w") as f:
            f.write("one document, two nodes\n")

        def sign(env, user, out):
            return subprocess.run([os.environ.get("SMARTCERT_BIN", "smartcert"), "sign", "--user", user,
                                   "--in", doc, "--authorize", "--out", out],
                                  env=env, capture_output=True, text=True, timeout=60)

        for name, env in (("A", d.env), ("B", env_b)):
            for u in ("anna", "ben"):
                r = sign(env, u, os.path.join(d.tmp, f"{u}-{name}.p7s"))
                check(r.returncode == 0, f"node {name} signs for {u}: {r.stderr.strip()}")

        ports = []
        for name, cf in (("A", d.config), ("B", conf_b)):
            port = free_port()
            ocspds.append(subprocess.Popen([OCSPD, "--config", cf, "--listen", f"127.0.0.1:{port}",
                                            "--foreground"], env=d.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            ports.append(port)
        serial = d.sc_json("ca", "show", "--user", "ben")["certificates"][0]["serial"]
        issuer = d.info["issuing_ca"]

        subprocess.run(["openssl", "ocsp", "-issuer", issuer, "-serial", "0x" + serial, "-no_nonce",
                        "-reqout", os.path.join(d.tmp, "req.der")], check=True, capture_output=True)
        req = base64.b64encode(open(os.path.join(d.tmp, "req.der"), "rb").read()).decode()

        def ocsp_status(port):
            """ben's status as a GET to the responder says it, in this process."""
            url = f"http://127.0.0.1:{port}/ocsp/" + urllib.parse.quote(req, safe="")
            der = urllib.request.urlopen(url, timeout=10).read()
            resp = ocsp.load_der_ocsp_response(der)
            return resp.certificate_status.name.lower()

        def health(port):
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
            except OSError:
                return False

        def memory_hits(port):
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            m = re.search(r'presigned_total\{event="memory_hit"\} (\d+)', text)
            return int(m.group(1)) if m else -1

        for p in ports:
            wait_for(lambda p=p: health(p), f"responder on {p} up")
            check(ocsp_status(p) == "good", f"responder on {p}: ben good before the revocation")
            # once stored, the answer is served from the responder's memory
            wait_for(lambda p=p: ocsp_status(p) == "good" and memory_hits(p) > 0,
                     f"responder on {p} answering from memory")

        # the revocation through the CA, then each node's next signature and
        # both responders
        d.sc("ca", "revoke", "--user", "ben", "--reason", "keyCompromise")
        t0 = time.time()   # the CLI has returned: the revocation is committed
        seen = {}          # check -> (began, ended) after the commit, in ms
        checks = [("ocsp-A", lambda: ocsp_status(ports[0]) == "revoked"),
                  ("ocsp-B", lambda: ocsp_status(ports[1]) == "revoked"),
                  ("sign-A", lambda: sign(d.env, "ben", os.path.join(d.tmp, "late.p7s")).returncode != 0),
                  ("sign-B", lambda: sign(env_b, "ben", os.path.join(d.tmp, "late.p7s")).returncode != 0)]
        while len(seen) < 4 and time.time() < t0 + 10:
            for name, fn in checks:
                began = time.time()
                if name not in seen and fn():
                    seen[name] = ((began - t0) * 1000, (time.time() - t0) * 1000)
        check(len(seen) == 4, f"refused by both services and revoked at both responders: {seen}")
        print("revocation committed -> seen by each node's first check after it (a signature is a "
              "fresh `smartcert sign` process, an OCSP check one GET): " +
              ", ".join(f"{k} began {b:.1f} ms, ended {e:.1f} ms" for k, (b, e) in seen.items()) +
              f"; the last done {max(e for _, e in seen.values()):.0f} ms after the commit (goal < 100 ms)")
        for name, env in (("A", d.env), ("B", env_b)):
            r = sign(env, "anna", os.path.join(d.tmp, f"anna2-{name}.p7s"))
            check(r.returncode == 0, f"node {name} still signs for anna")

        # The responders' change listeners cut off by the server: an answer
        # kept in memory must not outlive a revocation made meanwhile.
        serial = d.sc_json("ca", "show", "--user", "anna")["certificates"][0]["serial"]
        subprocess.run(["openssl", "ocsp", "-issuer", issuer, "-serial", "0x" + serial, "-no_nonce",
                        "-reqout", os.path.join(d.tmp, "req.der")], check=True, capture_output=True)
        req = base64.b64encode(open(os.path.join(d.tmp, "req.der"), "rb").read()).decode()
        for p in ports:
            before = memory_hits(p)
            wait_for(lambda p=p: ocsp_status(p) == "good" and memory_hits(p) > before,
                     f"responder on {p}: anna's answer in memory")
        cut = subprocess.run(["psql", "-Atqc", "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"],
                             capture_output=True, text=True, check=True).stdout.strip()
        check(int(cut) >= 2, f"every connection cut from the server's side, the listeners' too ({cut})")
        d.sc("ca", "revoke", "--user", "anna", "--reason", "keyCompromise")
        t0 = time.time()
        wait_for(lambda: all(ocsp_status(p) == "revoked" for p in ports),
                 "both responders answer revoked after their listeners were cut", timeout=10)
        print(f"listeners cut, then a revocation: both responders answer revoked "
              f"{(time.time() - t0) * 1000:.0f} ms after its commit")

        # Gateways that name both services carry on when one is killed
        # mid-load: a signature in flight on it fails, the next goes to the
        # other.
        conf_ab = os.path.join(d.dir, "smartcert-ab.conf")
        with open(conf_ab, "w") as f:
            f.write(conf.replace("service = unix:run/signd.sock",
                                 "service = unix:run/signd.sock unix:run/signd-b.sock"))
        os.chmod(conf_ab, 0o600)
        env_ab = dict(d.env, SMARTCERT_CONF=conf_ab)
        d.sc("ca", "enrol", "--user", "cara", "--name", "CARA Two-Nodes", "--id-number-source",
             "env:IDN", env=dict(d.env, IDN="T1000003"))
        results = []   # (start, end, ok, which worker)
        errors = []
        stop = threading.Event()

        def worker(w):
            n = 0
            while not stop.is_set():
                start = time.time()
                r = sign(env_ab, "cara", os.path.join(d.tmp, f"load-{w}-{n}.p7s"))
                results.append((start, time.time(), r.returncode == 0, w))
                if r.returncode != 0:
                    errors.append(r.stderr.strip()[-300:])
                n += 1

        def wait_until(cond, timeout):
            end = time.time() + timeout
            while not cond() and time.time() < end:
                time.sleep(0.05)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        # Kill node A once the load is under way (a few signatures made;
        # a slow build takes longer to get there), then keep the load on
        # until a few signatures have started well after the kill.
        wait_until(lambda: len(results) >= 4, 120)
        killed = time.time()
        d.signd_proc.kill()          # node A dies with signatures in flight
        d.signd_proc.wait()
        d.signd_proc = None
        wait_until(lambda: sum(1 for st, _, _, _ in results if st > killed + 0.2) >= 6, 120)
        stop.set()
        for t in threads:
            t.join()
        # A signature in flight on node A when it dies may fail however
        # late it ends; one started after the kill must not.
        before = [ok for _, end, ok, _ in results if end < killed]
        after = [ok for start, _, ok, _ in results if start > killed + 0.2]
        failed = sum(1 for _, _, ok, _ in results if not ok)
        check(before and all(before), f"{len(before)} signatures before the kill, all made: {errors[:3]}")
        check(len(after) >= 4 and all(after),
              f"after node A was killed the gateways carried on with node B: {sum(after)} of {len(after)}")
        print(f"failover: {len(before)} signatures before node A was killed, {failed} failed around the "
              f"kill, {len(after)} after it, all made by node B")
        returned = sum(1 for _, _, ok, _ in results if ok)
    finally:
        for p in ocspds:
            p.terminate()
            p.wait(timeout=20)
        signd_b.terminate()
        check(signd_b.wait(timeout=20) == 0, "node B's service stopped cleanly")
        log_b.close()

    # no token spent twice, every returned signature audited, the chain intact
    signs = d.sc_json("audit", "show", "--kind", "sign")
    tokens = [e["token_id"] for e in signs]
    check(len(tokens) == len(set(tokens)), f"{len(tokens)} signatures, each with its own token")
    check(len(tokens) >= 6 + returned,
          f"every returned signature has its audit record: {len(tokens)} audited, {6 + returned} returned")
    check(d.sc("audit", "verify").returncode == 0, "the audit chain verifies")
