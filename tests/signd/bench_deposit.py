#!/usr/bin/python3
"""Figures for deposited approvals (a benchmark, not a test:
`meson test -C build --benchmark --suite signd bench-deposit`).

In one run, against one service, with W gateway processes (each its own
module instance and sessions), every signature a fresh single-use token made
before the clock starts, over P-256 keys drawn in turn:

  context   C_SignInit -> C_Login(CKU_CONTEXT_SPECIFIC, token) -> C_Sign
  deposit   C_SignInit -> C_Sign consuming an approval deposited ahead
            (the deposits are made before the clock starts: in the real
            flow they arrive when the resident approves, off the
            gateway's signing path)
  deposit+  DEPOSIT(token) on the gateway's own connection, then
            C_SignInit -> C_Sign, both timed (end to end)

The paths alternate in rounds, so drift hits them alike; the figure is
deposit/context (goal >= 0.9), with deposit+/context beside it.  Then deposits/s alone: W processes, each
one connection, DEPOSIT requests back to back (tokens for distinct
digests; every one verified and committed), one round of as many as the
keys can hold (16 each).

Environment: SMARTCERT_BENCH_WORKERS (4), SMARTCERT_BENCH_SIGS (per worker
per round, 150), SMARTCERT_BENCH_ROUNDS (3), SMARTCERT_BENCH_KEYS (40)."""
import hashlib
import json
import multiprocessing as mp
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, mint_token, pykcs11_or_skip  # noqa: E402

P = pykcs11_or_skip()
MAGIC = 0x53435344
W = int(os.environ.get("SMARTCERT_BENCH_WORKERS", "4"))
N = int(os.environ.get("SMARTCERT_BENCH_SIGS", "150"))
ROUNDS = int(os.environ.get("SMARTCERT_BENCH_ROUNDS", "3"))
KEYS = int(os.environ.get("SMARTCERT_BENCH_KEYS", "40"))
PER_KEY = 16      # live deposits a key may hold (signd/deposit.c)


class Wire:
    """One raw connection as a gateway: HELLO (version 2), LOGIN."""

    def __init__(self, sock_path, pin):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(sock_path)
        self.call(struct.pack(">HII", 1, MAGIC, 2) + struct.pack(">I", 16) + os.urandom(16)
                  + struct.pack(">Q", 4))
        p = pin.encode()
        rv, _ = self.call(struct.pack(">HQB", 2, P.CKU_USER, 1) + struct.pack(">I", len(p)) + p)
        if rv != 0:
            raise SystemExit(f"gateway login refused: {rv:#x}")

    def recv(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise SystemExit("the service closed the connection")
            b += c
        return b

    def call(self, body):
        self.s.sendall(struct.pack(">I", len(body)) + body)
        n = struct.unpack(">I", self.recv(4))[0]
        body = self.recv(n)
        return struct.unpack(">I", body[:4])[0], body[4:]

    def deposit(self, token):
        t = token.encode()
        rv, rest = self.call(struct.pack(">H", 13) + struct.pack(">I", len(t)) + t + b"\x00"
                             + struct.pack(">I", 0))
        if rv != 0:
            raise SystemExit(f"deposit refused: {rv:#x} {rest[4:].decode(errors='replace')}")


start = None


def init_worker(barrier):
    global start
    start = barrier


def worker(args):
    """One gateway process: `mode` over its pre-made tokens; seconds taken."""
    mode, spec, jobs = args
    os.environ["SMARTCERT_CONF"] = spec["config"]
    lib = P.PyKCS11Lib()
    lib.load(spec["module"])
    slot = lib.getSlotList(tokenPresent=True)[0]
    anchor = lib.openSession(slot, P.CKF_SERIAL_SESSION)
    anchor.login(spec["pin"])
    s = lib.openSession(slot, P.CKF_SERIAL_SESSION)
    handles = {}
    for user in {j[0] for j in jobs}:
        handles[user] = s.findObjects([(P.CKA_CLASS, P.CKO_PRIVATE_KEY), (P.CKA_LABEL, user)])[0]
    wire = Wire(spec["sock"], spec["pin"]) if mode != "context" else None
    mech = P.Mechanism(P.CKM_ECDSA, None).to_native()
    if mode == "deposit":
        for _, _, token in jobs:
            wire.deposit(token)
    start.wait()
    t0 = time.perf_counter()
    for user, dg_hex, token in jobs:
        if mode == "deposit-only":
            wire.deposit(token)
            continue
        dg = P.ckbytelist(bytes.fromhex(dg_hex))
        if mode == "deposit+":
            wire.deposit(token)
        rv = s.lib.C_SignInit(s.session, mech, handles[user])
        if rv != 0:
            raise SystemExit(f"C_SignInit: {rv:#x}")
        if mode == "context":
            s.login(token, user_type=P.CKU_CONTEXT_SPECIFIC)
        sig = P.ckbytelist()
        s.lib.C_Sign(s.session, dg, sig)               # the length, as most clients ask
        rv = s.lib.C_Sign(s.session, dg, sig)
        if rv != 0:
            raise SystemExit(f"{mode}: C_Sign: {P.CKR.get(rv, rv)}")
    return time.perf_counter() - t0


def run(pool, mode, d, spec, kid, tag, n=N):
    jobs = []
    for w in range(W):
        js = []
        for i in range(n):
            user = f"u{(w * N + i) % KEYS}"
            dg = hashlib.sha256(f"{tag}-{mode}-{w}-{i}".encode()).digest()
            js.append((user, dg.hex(), mint_token(d, user, kid[user], [("sha256", dg)])))
        jobs.append((mode, spec, js))
    # Each worker times its own loop from a common start (after any
    # untimed deposits); the rate is all signatures over the longest loop.
    times = pool.map(worker, jobs)
    return W * n / max(times)


def main():
    with Deployment(prefix="bench-dep-", signd=True) as d:
        kid = {}
        for i in range(KEYS):
            e = d.enrol(f"u{i}", "p256")
            kid[f"u{i}"] = e.get("key_id") or e["keys"][0]["key_id"]
        spec = {"config": d.config, "module": d.module, "pin": d.gateway_pin,
                "sock": os.path.join(d.dir, "run", "signd.sock")}
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(W)
        with ctx.Pool(W, initializer=init_worker, initargs=(barrier,)) as pool:
            modes = ("context", "deposit", "deposit+")
            for mode in modes:
                run(pool, mode, d, spec, kid, "warm")
            rates = {m: [] for m in modes}
            for r in range(ROUNDS):
                for mode in modes if r % 2 == 0 else modes[::-1]:
                    rates[mode].append(run(pool, mode, d, spec, kid, f"r{r}"))
            # Deposits alone stay in the store (16 per key at most): one
            # round, as many as the keys hold.
            dep_rates = [run(pool, "deposit-only", d, spec, kid, "d", n=min(N, PER_KEY * KEYS // W))]
        c = sum(rates["context"]) / ROUNDS
        p = sum(rates["deposit"]) / ROUNDS
        pe = sum(rates["deposit+"]) / ROUNDS
        out = {"workers": W, "signatures_per_worker_per_round": N, "rounds": ROUNDS, "keys": KEYS,
               "context_sigs_per_s": round(c, 1), "deposit_sigs_per_s": round(p, 1),
               "ratio_deposit_over_context": round(p / c, 3),
               "deposit_plus_sigs_per_s": round(pe, 1),
               "ratio_deposit_plus_over_context": round(pe / c, 3),
               "deposits_per_s": round(dep_rates[0], 1),
               "deposits_measured": W * min(N, PER_KEY * KEYS // W),
               "per_round": {k: [round(x, 1) for x in v] for k, v in rates.items()},
               "deposits_per_round": [round(x, 1) for x in dep_rates]}
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
