#!/usr/bin/python3
"""Several gateway processes sharing one store (S7 across processes).

1. Replay race: two processes present the same tokens at the same moment;
   for every token exactly one signature comes out, the other process is
   refused.
2. Load: 3 processes x 4 threads x 25 signatures with distinct tokens: every
   signature verifies, every replay of a used token is refused, and the whole
   run finishes within a bounded time (no deadlock).

Children are this same file run with `child-race` / `child-load`; they print
one JSON document on stdout."""
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, Gateway, check, fail, mint_token  # noqa: E402

try:
    import PyKCS11 as P
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
except ImportError as e:
    print(f"SKIP: {e} (install python3-pykcs11 python3-cryptography)", file=sys.stderr)
    sys.exit(77)

PROCS, THREADS, PER_THREAD = 3, 4, 25
RACE_TOKENS = 20
TIMEOUT = 300


def attach(spec):
    """A Deployment object for an existing deployment (no `init`)."""
    d = Deployment.__new__(Deployment)
    d.config, d.module, d.gateway_pin = spec["config"], spec["module"], spec["gateway_pin"]
    return d


def wait_for(path, limit=60):
    end = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.002)


def child_race(spec):
    d = attach(spec)
    gw = Gateway(d)
    hkey, kid, _ = gw.key(spec["user"])
    mech = P.Mechanism(P.CKM_ECDSA, None)
    with open(spec["ready"] + f".{os.getpid()}", "w"):
        pass
    wait_for(spec["go"])
    results = []
    for t, dg in spec["tokens"]:
        try:
            sig = gw.sign(hkey, mech, bytes.fromhex(dg), t)
            results.append(["ok", sig.hex()])
        except P.PyKCS11Error as e:
            results.append([P.CKR.get(e.value, str(e.value)), None])
    print(json.dumps(results))


def child_load(spec):
    d = attach(spec)
    gw = Gateway(d)
    hkey, kid, _ = gw.key(spec["user"])
    mech = P.Mechanism(P.CKM_ECDSA, None)
    out = {"sigs": [], "replays": [], "errors": []}
    lock = threading.Lock()

    def worker(n):
        s = gw.new_session()        # one session per thread, as gateways do
        for i in range(PER_THREAD):
            dg = hashlib.sha256(f"{os.getpid()}-{n}-{i}".encode()).digest()
            tok = mint_token(d, spec["user"], kid, [("sha256", dg)])
            try:
                sig = gw.sign(hkey, mech, dg, tok, session=s)
                with lock:
                    out["sigs"].append([dg.hex(), sig.hex()])
            except P.PyKCS11Error as e:
                with lock:
                    out["errors"].append(P.CKR.get(e.value, str(e.value)))
                s.closeSession()
                s = gw.new_session()
                continue
            if i % 5 == 0:        # a replay of the token just used
                try:
                    gw.sign(hkey, mech, dg, tok, session=s)
                    res = "ok"
                except P.PyKCS11Error as e:
                    res = P.CKR.get(e.value, str(e.value))
                    s.closeSession()
                    s = gw.new_session()
                with lock:
                    out["replays"].append(res)
        s.closeSession()

    with open(spec["ready"] + f".{os.getpid()}", "w"):
        pass
    wait_for(spec["go"])
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(out))


def spawn(mode, spec_file, config):
    return subprocess.Popen([sys.executable, __file__, mode, spec_file], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, SMARTCERT_CONF=config))


def run_children(d, mode, specs, tag):
    go = os.path.join(d.tmp, f"go-{tag}")
    ready = os.path.join(d.tmp, f"ready-{tag}")
    procs = []
    for i, spec in enumerate(specs):
        spec.update(go=go, ready=ready)
        spec_file = os.path.join(d.tmp, f"spec-{tag}-{i}.json")
        with open(spec_file, "w") as f:
            json.dump(spec, f)
        procs.append(spawn(mode, spec_file, spec["config"]))
    # Release them together once every child has loaded the module.
    end = time.monotonic() + 120
    while sum(1 for f in os.listdir(d.tmp) if f.startswith(f"ready-{tag}.")) < len(procs):
        if time.monotonic() > end or any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                p.kill()
            fail(f"{tag}: children did not get ready: " + " | ".join(p.stderr.read()[-1500:] for p in procs))
        time.sleep(0.01)
    start = time.monotonic()
    with open(go, "w"):
        pass
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            fail(f"{tag}: a child did not finish within {TIMEOUT}s (deadlock?)")
        if p.returncode != 0:
            fail(f"{tag}: child exited {p.returncode}: {err[-2000:]}")
        results.append(json.loads(out))
    return results, time.monotonic() - start


def main():
    with Deployment(prefix="p11-mp-") as d:
        # Every lost race is a refused token and counts towards the key's
        # lock (S9); how many lose in a row depends on scheduling.  This test
        # is about S7, so the lock must not decide it.
        d.conf_set("authz.lock_threshold", str(RACE_TOKENS + 1))
        base = {"config": d.config, "module": d.module, "gateway_pin": d.gateway_pin}
        d.enrol("racer", "p256")
        for n in range(PROCS):
            d.enrol(f"load{n}", "p256")
        gw = Gateway(d)
        _, kid, cert_der = gw.key("racer")
        pub = x509.load_der_x509_certificate(cert_der).public_key()

        # 1. Replay race across two processes.
        tokens = []
        for i in range(RACE_TOKENS):
            dg = hashlib.sha256(f"race {i}".encode()).digest()
            tokens.append([mint_token(d, "racer", kid, [("sha256", dg)]), dg.hex()])
        specs = [dict(base, user="racer", tokens=tokens) for _ in range(2)]
        (a, b), secs = run_children(d, "child-race", specs, "race")
        for i, (ra, rb) in enumerate(zip(a, b)):
            wins = [r for r in (ra, rb) if r[0] == "ok"]
            if len(wins) != 1:
                fail(f"race token {i}: {len(wins)} processes signed ({ra[0]}, {rb[0]}); exactly one must")
            loser = rb if ra[0] == "ok" else ra
            if loser[0] != "CKR_PIN_EXPIRED":
                fail(f"race token {i}: the loser got {loser[0]}, expected CKR_PIN_EXPIRED")
            try:
                pub.verify(utils.encode_dss_signature(int(wins[0][1][:64], 16), int(wins[0][1][64:], 16)),
                           bytes.fromhex(tokens[i][1]), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            except InvalidSignature:
                fail(f"race token {i}: the winner's signature does not verify")
        won_a = sum(1 for r in a if r[0] == "ok")
        check(True, f"replay race: {RACE_TOKENS} tokens presented by 2 processes at once, each signed exactly "
                    f"once (process A won {won_a}, B {RACE_TOKENS - won_a}) in {secs:.2f}s")

        # 2. Load: distinct tokens from many threads in several processes.
        pubs = {}
        for n in range(PROCS):
            pubs[n] = x509.load_der_x509_certificate(gw.key(f"load{n}")[2]).public_key()
        specs = [dict(base, user=f"load{n}") for n in range(PROCS)]
        results, secs = run_children(d, "child-load", specs, "load")
        total = 0
        for n, res in enumerate(results):
            if res["errors"]:
                fail(f"process {n}: {len(res['errors'])} signatures refused: {sorted(set(res['errors']))}")
            for dg, sig in res["sigs"]:
                try:
                    pubs[n].verify(utils.encode_dss_signature(int(sig[:64], 16), int(sig[64:], 16)),
                                   bytes.fromhex(dg), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
                except InvalidSignature:
                    fail(f"process {n}: a signature does not verify")
            total += len(res["sigs"])
            bad = [r for r in res["replays"] if r != "CKR_PIN_EXPIRED"]
            if bad:
                fail(f"process {n}: replays not refused as CKR_PIN_EXPIRED: {bad}")
        want = PROCS * THREADS * PER_THREAD
        check(total == want, f"{PROCS} processes x {THREADS} threads x {PER_THREAD}: {total} signatures, "
                             f"all verify ({secs:.1f}s, {total / secs:.0f}/s)")
        replays = sum(len(r["replays"]) for r in results)
        check(replays == PROCS * THREADS * ((PER_THREAD + 4) // 5), f"all {replays} replays refused")

        # Every signature is in the audit log once, and the chain holds.
        recs = d.audit()
        signed = sum(1 for x in recs if x.get("kind") == "sign" and x.get("outcome") == "ok"
                     and (x.get("user") or "").startswith(("load", "racer")))
        check(signed == want + RACE_TOKENS, f"audit: {signed} sign records (want {want + RACE_TOKENS})")
        check(d.sc("audit", "verify", check=False).returncode == 0, "audit chain verifies")
        gw.close()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] in ("child-race", "child-load"):
        with open(sys.argv[2]) as f:
            spec = json.load(f)
        (child_race if sys.argv[1] == "child-race" else child_load)(spec)
    else:
        main()
