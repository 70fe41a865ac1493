#!/usr/bin/python3
"""The module's strict mode (test builds): an answer from the service that
does not decode is a broken precondition.  Against a fake service that
answers HELLO with a byte too many, C_OpenSession returns CKR_DEVICE_ERROR;
with SMARTCERT_PKCS11_STRICT=1 the process aborts instead, so a test suite
run in strict mode (every module test here is) would see any such case."""
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import check, need_test_hooks, pykcs11_or_skip  # noqa: E402

P = pykcs11_or_skip()


def fake_service(path, stop):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    srv.settimeout(0.2)
    while not stop.is_set():
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        try:
            c.settimeout(5)
            hdr = c.recv(4)
            n = struct.unpack(">I", hdr)[0]
            while n > 0:
                n -= len(c.recv(n))
            # CKR_OK, label, serial -- and one byte that should not be there.
            body = struct.pack(">I", 0) + struct.pack(">I", 1) + b"x" + struct.pack(">I", 1) + b"y" + b"!"
            c.sendall(struct.pack(">I", len(body)) + body)
            c.recv(1)
        except OSError:
            pass
        c.close()
    srv.close()


def child(module, conf, strict):
    env = {k: v for k, v in os.environ.items() if k != "SMARTCERT_PKCS11_STRICT"}
    env["SMARTCERT_CONF"] = conf
    if strict:
        env["SMARTCERT_PKCS11_STRICT"] = "1"
    code = ("import PyKCS11 as P, sys\n"
            "lib = P.PyKCS11Lib(); lib.load(sys.argv[1])\n"
            "try:\n    lib.openSession(0, P.CKF_SERIAL_SESSION); print('CKR_OK')\n"
            "except P.PyKCS11Error as e:\n    print(P.CKR.get(e.value, e.value))\n")
    return subprocess.run([sys.executable, "-c", code, module], env=env, capture_output=True,
                          text=True, timeout=60)


def main():
    need_test_hooks()
    module = os.environ["SMARTCERT_PKCS11_MODULE"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("SMARTCERT_BUILDDIR")) as tmp:
        sock = os.path.join(tmp, "fake.sock")
        conf = os.path.join(tmp, "gateway.conf")
        with open(conf, "w") as f:
            f.write(f"[gateway]\nservice = unix:{sock}\ntimeout = 10\n")
        stop = threading.Event()
        t = threading.Thread(target=fake_service, args=(sock, stop))
        t.start()
        try:
            r = child(module, conf, strict=False)
            check(r.returncode == 0 and r.stdout.strip() == "CKR_DEVICE_ERROR",
                  f"an answer that does not decode: CKR_DEVICE_ERROR ({r.stdout.strip()} {r.stderr[-200:]})")
            r = child(module, conf, strict=True)
            check(r.returncode == -signal.SIGABRT and "broken precondition: HELLO" in r.stderr,
                  f"... and in strict mode the process aborts ({r.returncode})")
        finally:
            stop.set()
            t.join()


if __name__ == "__main__":
    main()
