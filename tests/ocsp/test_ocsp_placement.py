#!/usr/bin/env python3
"""Which worker serves a connection, and where workers run (ocsp/ocsp_cpu.h).

With two workers on a machine whose CPUs are numbered from 0, a connection
opened from CPU 0 is served by worker 0.  Once it has made 32 requests
(keep-alive), worker 0 keeps to its CPUs.  When the client then sends from
CPU 1, within a few checks the daemon answers with "Connection: close",
counts a move, and the client's new connection (from CPU 1) is served by
worker 1, which now keeps to its CPUs while worker 0 floats again.
Connections of one request each never pin a worker.  With
ocsp.cpu_steering = no nothing moves and nothing is pinned.  Each worker
asks for a 0.1 ms scheduler slice (honoured from Linux 6.12).  Skipped
where CPUs 0 and 1 are not both usable, where lo has receive packet
steering, or where the kernel refuses the steering program.  Started on
one CPU, two workers are not steered and the default is one worker."""
import base64
import http.client
import os
import platform
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (Responder, make_request, verify_response, check, fail,  # noqa: E402
                      ocsp, enrol, metric, set_ocsp_option)
from scfixture import Deployment  # noqa: E402

MOVED = "smartcert_ocsp_connections_moved_total"


def cpus_from_zero():
    try:
        with open("/sys/devices/system/cpu/online") as f:
            line = f.read().strip()
    except OSError:
        return 0
    if line == "0":
        return 1
    if not line.startswith("0-") or not line[2:].isdigit():
        return 0
    return int(line[2:]) + 1


def kernel_at_least(major, minor):
    nums = platform.release().split("-")[0].split(".")
    try:
        return (int(nums[0]), int(nums[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def workers(r):
    """{tid: allowed CPU set} of the daemon's HTTP worker threads."""
    out = {}
    base = f"/proc/{r.proc.pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/comm") as f:
                if not f.read().startswith("MHD"):
                    continue
            out[int(tid)] = os.sched_getaffinity(int(tid))
        except OSError:
            pass
    return out


def wait_affinity(r, want, what, timeout=5.0):
    """Poll until the sorted list of worker CPU sets equals `want`."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = sorted((sorted(s) for s in workers(r).values()))
        if got == sorted(sorted(s) for s in want):
            check(True, what)
            return
        time.sleep(0.02)
    fail(f"{what}: worker CPU sets {got}, expected {sorted(sorted(s) for s in want)}")


class KeepAlive:
    """One HTTP/1.1 keep-alive connection asking the same GET."""

    def __init__(self, r, path):
        self.c = http.client.HTTPConnection("127.0.0.1", r.port, timeout=30)
        self.path = path
        self.last = None

    def ask(self):
        """(closed by the server?, body)"""
        self.c.request("GET", self.path)
        resp = self.c.getresponse()
        body = resp.read()
        if resp.status != 200:
            fail(f"GET: HTTP {resp.status}")
        self.last = body
        return (resp.getheader("Connection") or "").lower() == "close", body

    def close(self):
        self.c.close()


def on_cpu(cpu):
    os.sched_setaffinity(0, {cpu})
    time.sleep(0.01)


def rps_on_loopback():
    """Receive packet steering on lo would process packets away from the
    sender's CPU, which this test takes as the client's CPU."""
    try:
        for q in os.listdir("/sys/class/net/lo/queues"):
            if q.startswith("rx-"):
                with open(f"/sys/class/net/lo/queues/{q}/rps_cpus") as f:
                    if int(f.read().strip().replace(",", "") or "0", 16) != 0:
                        return True
    except (OSError, ValueError):
        pass
    return False


ncpu = cpus_from_zero()
allowed = os.sched_getaffinity(0)
if ncpu < 2 or not {0, 1} <= allowed:
    print(f"SKIP: needs CPUs 0 and 1 online and usable (online 0..{ncpu - 1}, "
          f"usable {sorted(allowed)})")
    sys.exit(77)
if rps_on_loopback():
    print("SKIP: receive packet steering is on for lo")
    sys.exit(77)
own = [{c for c in allowed if c % 2 == i} for i in range(2)]

with Deployment() as d:
    serial, _, _ = enrol(d, "pia")
    path = "/ocsp/" + urllib.parse.quote(
        base64.b64encode(make_request(d, [serial])).decode(), safe="")

    with Responder(d, "--threads", "2") as r:
        if metric(r, "smartcert_ocsp_cpu_steering") != 1:
            # a kernel or sandbox without SO_ATTACH_REUSEPORT_CBPF
            print("SKIP: the daemon could not steer connections by CPU here")
            r.stop()
            sys.exit(77)
        check(len(workers(r)) == 2, "two HTTP worker threads")
        wait_affinity(r, [allowed, allowed], "workers float before any keep-alive connection")

        if kernel_at_least(6, 12) and os.sched_getscheduler(0) == os.SCHED_OTHER and \
                os.path.exists(f"/proc/{r.proc.pid}/task/{r.proc.pid}/sched"):
            KeepAlive(r, path).ask()      # a worker asks for its slice on its first connection
            slices = []
            for tid in workers(r):
                with open(f"/proc/{r.proc.pid}/task/{tid}/sched") as f:
                    slices += [int(ln.split(":")[1]) for ln in f if ln.startswith("se.slice")]
            check(100000 in slices, f"a worker that served a connection runs with a 0.1 ms "
                  f"slice (se.slice {slices})")

        # short connections (one request each) never pin a worker
        on_cpu(0)
        for _ in range(50):
            k = KeepAlive(r, path)
            k.ask()
            k.close()
        wait_affinity(r, [allowed, allowed], "50 one-request connections pin no worker")

        # a keep-alive connection from CPU 0 pins worker 0 to CPU 0's set
        k = KeepAlive(r, path)
        for _ in range(40):
            closed, body = k.ask()
            if closed:
                fail("a connection from CPU 0, served on CPU 0's worker, was closed")
        resp = verify_response(d, body)
        check(resp.certificate_status == ocsp.OCSPCertStatus.GOOD, "answers are good, verified")
        wait_affinity(r, [own[0], allowed],
                      f"after 40 requests from CPU 0 its worker keeps to CPUs {sorted(own[0])}")
        moved0 = metric(r, MOVED)

        # the client moves to CPU 1: the daemon closes the connection to move it
        on_cpu(1)
        n = 0
        closed = False
        while n < 400 and not closed:
            closed, body = k.ask()
            n += 1
        check(closed, f"after the client moved to CPU 1 the daemon closed the connection "
              f"to move it ({n} requests)")
        check(metric(r, MOVED) == moved0 + 1, "the move is counted in /metrics")
        resp = verify_response(d, body)
        check(resp.certificate_status == ocsp.OCSPCertStatus.GOOD,
              "the closing answer is a complete, verified response")
        k.close()

        # reconnecting from CPU 1 lands on worker 1, which stays
        k = KeepAlive(r, path)
        for _ in range(300):
            closed, _ = k.ask()
            if closed:
                fail("a connection from CPU 1, served on CPU 1's worker, was closed")
        check(True, "300 requests from CPU 1 on the new connection, none closed")
        wait_affinity(r, [allowed, own[1]],
                      f"worker 1 keeps to CPUs {sorted(own[1])}; worker 0 floats again")
        k.close()
        wait_affinity(r, [allowed, allowed], "with no keep-alive connection left, both float")

    set_ocsp_option(d, "cpu_steering", "no")
    os.sched_setaffinity(0, allowed)      # the daemon inherits the starter's CPUs
    with Responder(d, "--threads", "2") as r:
        on_cpu(0)
        k = KeepAlive(r, path)
        for _ in range(40):
            k.ask()
        on_cpu(1)
        for _ in range(300):
            closed, _ = k.ask()
            if closed:
                fail("ocsp.cpu_steering = no: a connection was closed to move it")
        check(metric(r, MOVED) == 0, "ocsp.cpu_steering = no: nothing moved")
        check(metric(r, "smartcert_ocsp_cpu_steering") == 0,
              "ocsp.cpu_steering = no: /metrics says connections are not steered")
        wait_affinity(r, [allowed, allowed], "ocsp.cpu_steering = no: no worker pinned")
        k.close()

    # started on CPU 1 alone: two workers cannot each have a usable CPU, so
    # no steering; by default one worker per usable CPU
    on_cpu(1)
    set_ocsp_option(d, "cpu_steering", "yes")
    with Responder(d, "--threads", "2") as r:
        check(metric(r, "smartcert_ocsp_cpu_steering") == 0,
              "two workers on one usable CPU: connections are not steered")
    with Responder(d) as r:
        check(len(workers(r)) == 1, "on one usable CPU the default is one worker")
    os.sched_setaffinity(0, allowed)
print("all placement checks passed")
