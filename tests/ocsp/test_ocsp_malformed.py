#!/usr/bin/env python3
"""Bad input gets the right OCSP error or HTTP status, and the daemon keeps
serving everyone else: truncated DER, garbage, wrong content type, oversized
body, invalid base64 in GET, wrong method, a slow client trickling bytes,
2,000 idle connections.  After each, a good request still works.  Then the
bounds: with ocsp.max_connections and ocsp.idle_timeout_seconds set low,
at most that many connections are held (the rest wait in the listen
backlog) and idle ones are closed, so a flood of idle clients delays a
relying party by about the idle timeout and no more."""
import base64
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ocsptest import (Responder, make_request, verify_response, statuses, check, raw_http,  # noqa: E402
                      ocsp, enrol, ocsp_status, set_ocsp_option)
from scfixture import Deployment  # noqa: E402

GOOD = ocsp.OCSPCertStatus.GOOD
MALFORMED = ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def still_good(r, d, serial, what):
    s = statuses(verify_response(d, r.post(make_request(d, [serial]))))[0]
    check(s[1] == GOOD, f"good request still answered after {what}")


with Deployment() as d:
    serial, _, _ = enrol(d, "dave")
    with Responder(d) as r:
        good_req = make_request(d, [serial])
        still_good(r, d, serial, "start")

        body = r.post(good_req[:len(good_req) // 2])
        check(ocsp_status(body) == MALFORMED, "truncated DER: malformedRequest")
        body = r.post(b"\x01\x02garbage")
        check(ocsp_status(body) == MALFORMED, "garbage: malformedRequest")
        body = r.post(good_req + b"\x00")
        check(ocsp_status(body) == MALFORMED, "trailing bytes: malformedRequest")
        body = r.post(b"")
        check(ocsp_status(body) == MALFORMED, "empty body: malformedRequest")
        odd = good_req.replace(bytes.fromhex("06052b0e03021a0500"), bytes.fromhex("06052b0e03021a2000"))
        check(odd != good_req, "request with hashAlgorithm parameters [UNIVERSAL 0] built")
        body = r.post(odd)
        check(ocsp_status(body) == MALFORMED,
              "hashAlgorithm parameters neither absent nor NULL: malformedRequest")
        body = r.post(make_request(d, list(range(1, 40))))
        check(ocsp_status(body) == MALFORMED, "39 CertIDs (cap 32): malformedRequest")
        still_good(r, d, serial, "bad DER")

        r.post(good_req, ctype="text/plain", expect=415)
        check(True, "wrong content type: 415")
        r.post(b"\x30" * (17 * 1024), expect=413)
        check(True, "17 KiB body: 413")
        # oversized without Content-Length (chunked)
        chunk = b"4000\r\n" + b"A" * 0x4000 + b"\r\n"
        out = raw_http(r.port, b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/ocsp-request\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + chunk * 2 + b"0\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 413"), "chunked oversized body: 413")
        still_good(r, d, serial, "oversized bodies")

        body = r.get(None, raw_path="!!!not-base64***", expect=400)
        check(ocsp_status(body) == MALFORMED, "invalid base64 in GET: 400 + malformedRequest")
        body = r.get(None, raw_path=base64.b64encode(b"\x30\x03garbage").decode())
        check(ocsp_status(body) == MALFORMED, "base64 of garbage: malformedRequest")
        out = raw_http(r.port, b"GET /ocsp/" + b"A" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 414") or out.startswith(b"HTTP/1.1 431"),
              f"20 kB GET URL refused: {out[:20]!r}")
        out = raw_http(r.port, b"PUT /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 405"), "PUT: 405")
        out = raw_http(r.port, b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 404"), "unknown path: 404")
        still_good(r, d, serial, "bad GETs")

        # a slow client trickling a request byte by byte while others are served
        stop = threading.Event()
        trickle_result = {}

        def trickle():
            req = (b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request"
                   b"\r\nContent-Length: %d\r\n\r\n" % len(good_req)) + good_req
            s = socket.create_connection(("127.0.0.1", r.port), timeout=30)
            try:
                for i in range(len(req)):
                    if stop.is_set():
                        break
                    s.sendall(req[i:i + 1])
                    time.sleep(0.01)
                resp = s.recv(65536)
                trickle_result["resp"] = resp
            except OSError as e:
                trickle_result["err"] = e
            s.close()

        t = threading.Thread(target=trickle)
        t.start()
        t0 = time.monotonic()
        served = 0
        while t.is_alive() and time.monotonic() - t0 < 20:
            still = statuses(verify_response(d, r.post(good_req)))[0]
            served += still[1] == GOOD
        stop.set()
        t.join()
        check(served > 10, f"{served} requests served while a client trickled bytes")
        check(trickle_result.get("resp", b"").startswith(b"HTTP/1.1 200"),
              "the trickling client is answered too")

        # many idle connections
        socks = []
        try:
            for i in range(2000):
                # from 20 loopback addresses: one address may hold at most
                # ocsp.max_connections_per_address (128) connections
                socks.append(socket.create_connection(("127.0.0.1", r.port), timeout=10,
                                                      source_address=(f"127.0.1.{i % 20 + 1}", 0)))
        except OSError as e:
            print(f"# opened {len(socks)} idle connections before: {e}")
        check(len(socks) >= 1500, f"{len(socks)} idle connections open")
        t0 = time.monotonic()
        still_good(r, d, serial, f"{len(socks)} idle connections")
        check(time.monotonic() - t0 < 5, "and answered quickly")
        for s in socks:
            s.close()
        still_good(r, d, serial, "closing the idle connections")
        check(r.proc.poll() is None, "daemon still running")

    # Idle connections are bounded in number and in time.
    set_ocsp_option(d, "max_connections", "32")
    set_ocsp_option(d, "idle_timeout_seconds", "1")
    with Responder(d) as r:
        still_good(r, d, serial, "restart with max_connections = 32")
        # from 12 other loopback addresses, 8 each: max_connections / 4 is
        # the most one address may hold
        socks = [socket.create_connection(("127.0.0.1", r.port), timeout=10,
                                          source_address=(f"127.0.2.{i % 12 + 1}", 0))
                 for i in range(96)]
        # the 97th client, behind 96 idle ones, gets its answer once the
        # idle ones before it are reaped
        still_good(r, d, serial, "96 idle connections against max_connections = 32")
        closed = 0
        deadline = time.monotonic() + 30
        for s in socks:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        check(closed == len(socks), f"all {len(socks)} idle connections closed by the daemon "
              "after the idle timeout")
        for s in socks:
            s.close()
        still_good(r, d, serial, "the idle connections were reaped")
        check(r.proc.poll() is None, "daemon still running")
print("all malformed-input checks passed")
