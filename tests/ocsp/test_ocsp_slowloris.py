#!/usr/bin/env python3
"""Slow clients cannot starve the responder (a bounded slowloris, 127.0.0.1
only, under 60 s).

An attacker on 127.0.0.2 keeps a few hundred connections open, each sending
one header line every 2 s (never finishing its request, never idle long
enough for the idle timeout) and reconnecting whenever the daemon closes
it.  Meanwhile a relying party on 127.0.0.1 asks /healthz and an OCSP
question every 0.25 s: every one must be answered, promptly.  Run at the
default settings and with ocsp.max_connections = 16 (where, before the
request deadline and the per-address cap, 40 such sockets left healthz
unanswered for 25 s).  The daemon's counters show both guards at work: the
attacker's connections are shut down at the request deadline and refused
beyond the per-address cap.  A lone slow request is closed within the
deadline (plus one tick of the guard), and a slow one that completes within
the deadline is answered."""
import os
import selectors
import socket
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (Responder, make_request, verify_response, statuses, check,  # noqa: E402
                      ocsp, enrol, set_ocsp_option, metric)
from scfixture import Deployment  # noqa: E402

GOOD = ocsp.OCSPCertStatus.GOOD
ATTACKER = "127.0.0.2"
SOCKETS = 300
RUN_SECONDS = 12


class Slowloris:
    """SOCKETS non-blocking connections from ATTACKER, one line per 2 s each."""

    def __init__(self, port):
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.socks = {}
        self.opened = self.closed_by_server = 0

    def open_one(self):
        s = socket.socket()
        s.setblocking(False)
        s.bind((ATTACKER, 0))
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        self.socks[s] = [time.monotonic(), 0]
        self.sel.register(s, selectors.EVENT_READ)
        self.opened += 1

    def drop(self, s):
        self.sel.unregister(s)
        del self.socks[s]
        s.close()

    def step(self):
        now = time.monotonic()
        for key, _ in self.sel.select(timeout=0):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                self.closed_by_server += 1
                self.drop(s)
        for s, st in list(self.socks.items()):
            if now >= st[0]:
                line = b"GET /healthz HTTP/1.1\r\n" if st[1] == 0 else b"X-Slow-%d: 1\r\n" % st[1]
                try:
                    s.send(line)
                    st[1] += 1
                    st[0] = now + 2.0
                except BlockingIOError:
                    st[0] = now + 0.1     # not connected yet
                except OSError:
                    self.closed_by_server += 1
                    self.drop(s)
        for _ in range(min(20, SOCKETS - len(self.socks))):   # reconnect, not a flood
            self.open_one()

    def close(self):
        for s in list(self.socks):
            self.drop(s)


def probe(r, req, timeout=3.0):
    """(healthz seconds, ocsp seconds); raises on no answer."""
    t0 = time.monotonic()
    with urllib.request.urlopen(r.url + "/healthz", timeout=timeout) as resp:
        ok = resp.status == 200
    t1 = time.monotonic()
    st = statuses(verify_response(r.d, r.post(req)))[0][1]
    t2 = time.monotonic()
    if not ok or st != GOOD:
        raise RuntimeError("wrong answer")
    return t1 - t0, t2 - t1


def attack(d, label, user):
    serial, _, _ = enrol(d, user)
    req = make_request(d, [serial])
    with Responder(d) as r:
        probe(r, req)
        sl = Slowloris(r.port)
        worst, answered, failures = 0.0, 0, []
        t_end = time.monotonic() + RUN_SECONDS
        next_probe = time.monotonic()
        try:
            while time.monotonic() < t_end:
                sl.step()
                if time.monotonic() >= next_probe:
                    try:
                        a, b = probe(r, req)
                        worst = max(worst, a, b)
                        answered += 1
                    except Exception as e:      # noqa: BLE001
                        failures.append(f"{time.monotonic() - t_end + RUN_SECONDS:.1f}s: {e}")
                    next_probe = time.monotonic() + 0.25
                time.sleep(0.01)
            dropped = metric(r, 'smartcert_ocsp_connections_closed_total{reason="request_deadline"}')
            refused = metric(r, 'smartcert_ocsp_connections_closed_total{reason="per_address_limit"}')
        finally:
            sl.close()
        print(f"# {label}: {sl.opened} attacker connections opened, {sl.closed_by_server} "
              f"closed by the daemon ({dropped:.0f} at the deadline, {refused:.0f} over the "
              f"per-address cap); {answered} probes, worst {worst * 1000:.0f} ms")
        check(not failures, f"{label}: healthz and OCSP answered throughout ({answered} probes, "
              f"worst {worst * 1000:.0f} ms) {failures[:3]}")
        check(worst < 2.0, f"{label}: no probe waited 2 s or more")
        check(dropped > 0, f"{label}: slow requests were shut down at the deadline")
        check(refused > 0, f"{label}: connections over the per-address cap were refused")
        return r


def lone_slow_request(d):
    with Responder(d) as r:
        s = socket.create_connection(("127.0.0.1", r.port), timeout=10,
                                     source_address=("127.0.0.3", 0))
        t0 = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        closed_at = None
        while time.monotonic() - t0 < 12:
            try:
                s.sendall(b"X: 1\r\n")
            except OSError:
                closed_at = time.monotonic() - t0
                break
            s.settimeout(1.0)
            try:
                if s.recv(1) == b"":
                    closed_at = time.monotonic() - t0
                    break
            except socket.timeout:
                pass
            except OSError:
                closed_at = time.monotonic() - t0
                break
        s.close()
        check(closed_at is not None and 2.0 <= closed_at <= 2.0 + 1.5,
              f"a request still arriving after the 2 s deadline is closed "
              f"({closed_at if closed_at is None else round(closed_at, 2)} s)")
        # slow but within the deadline: answered
        s = socket.create_connection(("127.0.0.1", r.port), timeout=10,
                                     source_address=("127.0.0.3", 0))
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            s.sendall(part)
            time.sleep(0.5)
        check(s.recv(100).startswith(b"HTTP/1.1 200"),
              "a request trickled over 1.5 s (inside the deadline) is answered")
        s.close()


with Deployment() as d:
    t_start = time.monotonic()
    attack(d, "default settings", "mia")
    set_ocsp_option(d, "max_connections", "16")
    attack(d, "max_connections = 16", "nina")
    set_ocsp_option(d, "request_deadline_seconds", "2")
    lone_slow_request(d)
    check(time.monotonic() - t_start < 60, "the whole test took under 60 s")
print("all slow-client checks passed")
