#!/usr/bin/python3
"""The signing service against a hostile client on its socket: garbage,
truncated and oversized frames, a request before HELLO, a protocol version
it does not speak, a client that stalls mid-frame or never says HELLO, and
more connections than signd.max_connections.  Each is cut off (the service
closes the connection, within signd.request_timeout where time is the
weapon), the service keeps running, and a real gateway still signs while
the attackers hold their connections."""
import hashlib
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import (Deployment, Gateway, check, mint_token, pykcs11_or_skip,  # noqa: E402
                       wire_answer, wire_frame as frame, wire_hello as hello)

P = pykcs11_or_skip()

TIMEOUT = 2          # signd.request_timeout for this test


def connect(d):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(d.dir, "run", "signd.sock"))
    return s


def closed_within(s, seconds):
    """Seconds until the service closed the connection (None: still open)."""
    s.settimeout(seconds)
    t0 = time.time()
    try:
        while True:
            b = s.recv(4096)
            if not b:
                return time.time() - t0
    except (socket.timeout, TimeoutError):
        return None
    except ConnectionResetError:
        return time.time() - t0


def answer(s):
    s.settimeout(10)
    return wire_answer(s)


def main():
    with Deployment(prefix="signd-hostile-") as d:
        d.conf_set("signd.request_timeout", str(TIMEOUT), restart=False)
        d.conf_set("signd.max_connections", "8")
        enrolled = d.enrol("target", "p256")
        kid = enrolled.get("key_id") or enrolled["keys"][0]["key_id"]

        s = connect(d)
        s.sendall(os.urandom(64))
        check(closed_within(s, 20) is not None, "garbage: connection closed")
        s = connect(d)
        s.sendall(struct.pack(">I", 0xFFFFFFF0) + b"x" * 16)
        check(closed_within(s, 20) is not None, "a length beyond the frame limit: closed")
        s = connect(d)
        s.sendall(frame(struct.pack(">HQB", 2, 1, 1) + struct.pack(">I", 4) + b"pin!"))
        check(closed_within(s, 20) is not None, "a request before HELLO: closed")
        s = connect(d)
        s.sendall(hello(version=99))
        rv = answer(s)
        check(rv == P.CKR_DEVICE_ERROR and closed_within(s, 20) is not None,
              f"an unknown protocol version: CKR_DEVICE_ERROR, then closed ({rv})")
        s = connect(d)
        s.sendall(hello() + frame(struct.pack(">H", 3) + b"\x00"))
        rv = answer(s)
        check(rv == 0 and closed_within(s, 20) is not None,
              "a body with a byte left over after HELLO: closed")
        s = connect(d)
        s.sendall(hello() + struct.pack(">I", 100) + b"0123456789")
        answer(s)
        t = closed_within(s, TIMEOUT + 20)
        check(t is not None and t >= TIMEOUT - 0.5,
              f"a frame stalled mid-way: closed once the request timeout passed ({t})")
        s = connect(d)
        t = closed_within(s, TIMEOUT + 20)
        check(t is not None and t >= TIMEOUT - 0.5,
              f"no HELLO at all: closed once the request timeout passed ({t})")

        # More connections than allowed: the extra ones are closed at once.
        held = []
        for _ in range(7):
            c = connect(d)
            c.sendall(hello())
            held.append((c, answer(c)))
        check(all(rv == 0 for _, rv in held), "seven idle, well-behaved connections are kept")
        held = [c for c, _ in held]
        extra = [connect(d) for _ in range(5)]
        shut = sum(1 for c in extra if closed_within(c, 20) is not None)
        check(shut == 5, f"connections past signd.max_connections are closed ({shut} of 5)")
        for c in extra:
            c.close()

        # A real gateway, within the limit, signs while the attackers wait.
        held[-1].close()
        held.pop()
        gw = Gateway(d)
        key = gw.key("target")[0]
        dg = hashlib.sha256(b"still served").digest()
        sig = gw.sign(key, P.Mechanism(P.CKM_ECDSA, None), dg,
                      mint_token(d, "target", kid, [("sha256", dg)]))
        check(len(sig) == 64, "a gateway signs while hostile connections are held")
        gw.close()
        for c in held:
            c.close()
        check(d.signd_proc.poll() is None, "the service is still running")


if __name__ == "__main__":
    main()
