"""Shared fixture for integration tests: a real deployment in a temporary
directory (its own SoftHSMv2 token, its own LMDB store), created with the
real `smartcert init`, never touching the user's SoftHSMv2 configuration.

    from scfixture import Deployment, skip_unless
    with Deployment() as d:
        d.sc("ca", "enrol", "--user", "alice", ...)       # checked run
        r = d.sc("ca", "revoke", ..., check=False)        # returns CompletedProcess
        d.config, d.dir, d.module, d.gateway_pin, d.info  # facts from `init --json`

Tests that need a tool that is not installed call skip_unless("tool"),
which exits 77 (meson's "skipped"), never 0.
"""
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile

SMARTCERT = os.environ.get("SMARTCERT_BIN", "smartcert")
BUILDDIR = os.environ.get("SMARTCERT_BUILDDIR", os.getcwd())
SRCDIR = os.environ.get("SMARTCERT_SRCDIR", os.getcwd())


def skip_unless(*tools):
    for t in tools:
        if shutil.which(t) is None:
            print(f"SKIP: {t} is not installed", file=sys.stderr)
            sys.exit(77)


def need_test_hooks():
    """Tests that move the clock need a -Dtest_hooks=true build."""
    if os.environ.get("SMARTCERT_TEST_HOOKS") != "1":
        print("SKIP: needs a build configured with -Dtest_hooks=true", file=sys.stderr)
        sys.exit(77)


def pykcs11_or_skip():
    """PyKCS11, or exit 77 (skipped) where it is not installed."""
    try:
        import PyKCS11
    except ImportError as e:
        print(f"SKIP: {e} (install python3-pykcs11)", file=sys.stderr)
        sys.exit(77)
    return PyKCS11


def run_json_child(script, spec, env, preexec_fn=None, timeout=120):
    """Run `python3 SCRIPT child JSON(spec)`; its last stdout line, as JSON."""
    r = subprocess.run([sys.executable, script, "child", json.dumps(spec)], env=env,
                       preexec_fn=preexec_fn, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        fail(f"{os.path.basename(script)} child failed ({r.returncode}): {r.stderr[-3000:]}")
    return json.loads(r.stdout.splitlines()[-1])


def main_or_child(main, child):
    """A script's entry: `SCRIPT child JSON` runs child(spec) (run_json_child), else main()."""
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        child(json.loads(sys.argv[2]))
    else:
        main()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The signing service's wire protocol spoken by hand (docs/signd.md):
# 4-byte big-endian length frames; an answer's body starts with its CK_RV.
WIRE_MAGIC = 0x53435344


def wire_frame(body):
    return struct.pack(">I", len(body)) + body


def wire_hello(version=1):
    """The HELLO frame (request 1) with a random nonce."""
    return wire_frame(struct.pack(">HII", 1, WIRE_MAGIC, version) + struct.pack(">I", 16)
                      + os.urandom(16) + struct.pack(">Q", 4))


def _recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            return None
        b += c
    return b


def wire_answer(s):
    """The CK_RV of the next answer on socket s (None: the service closed it)."""
    hdr = _recv_exact(s, 4)
    body = _recv_exact(s, struct.unpack(">I", hdr)[0]) if hdr else None
    return struct.unpack(">I", body[:4])[0] if body else None


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print(f"ok - {msg}")


class Deployment:
    """A fresh deployment; removed on exit unless SMARTCERT_KEEP_TEST_DIRS=1."""

    def __init__(self, *init_args, prefix="sc-test-", signd=None):
        base = os.path.join(BUILDDIR, "test-tmp")
        os.makedirs(base, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=base)
        self.dir = os.path.join(self.tmp, "deploy")
        self.env = dict(os.environ)
        # Never the user's SoftHSMv2 config: init writes its own and the
        # config names it; unset any inherited one to prove that.
        self.env.pop("SOFTHSM2_CONF", None)
        # SC_TEST_BACKEND=nss: the same test on an NSS softoken database
        if os.environ.get("SC_TEST_BACKEND") == "nss" and "--backend-token-uri" not in init_args:
            init_args = ("--backend", "nss", *init_args)
        # SC_TEST_STORE=postgresql: the store in the PostgreSQL server that
        # tests/lib/with-postgres.sh started, one schema per deployment
        if os.environ.get("SC_TEST_STORE") == "postgresql" and "--store" not in init_args:
            schema = "d_" + hashlib.sha256(self.tmp.encode()).hexdigest()[:16]
            init_args = ("--store", "postgresql", "--store-schema", schema, *init_args)
        r = subprocess.run([SMARTCERT, "init", "--dir", self.dir, "--json", *init_args],
                           env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            self.close()
            fail(f"smartcert init failed ({r.returncode}): {r.stderr}")
        self.info = json.loads(r.stdout)
        self.config = self.info["config"]
        self.module = os.environ.get("SMARTCERT_PKCS11_MODULE", self.info.get("module"))
        with open(self.info["gateway_pin_file"]) as f:
            self.gateway_pin = f.read().strip()
        self.env["SMARTCERT_CONF"] = self.config
        self.signd_proc = None
        self.signd_log = os.path.join(self.tmp, "signd.log")
        self.fake_time_file = os.path.join(self.tmp, "signd-time")
        # Gateways need the signing service; the module's tests get one.
        if signd is None:
            signd = os.environ.get("SMARTCERT_START_SIGND") == "1"
        if signd:
            self.start_signd()

    def start_signd(self, env=None, preexec_fn=None):
        """Start smartcert-signd for this deployment; wait for its socket."""
        import time
        sock = self.info.get("signd_socket") or os.path.join(self.dir, "run", "signd.sock")
        try:
            os.unlink(sock)
        except FileNotFoundError:
            pass
        binp = os.environ.get("SMARTCERT_SIGND_BIN", "smartcert-signd")
        log = open(self.signd_log, "ab")
        senv = dict(env or self.env)
        senv.pop("SMARTCERT_FAKE_TIME", None)
        # A test build's service reads its clock from this file (set_time).
        senv["SMARTCERT_FAKE_TIME_FILE"] = self.fake_time_file
        self.signd_proc = subprocess.Popen([binp, "--config", self.config],
                                           env=senv, stdout=log, stderr=log,
                                           preexec_fn=preexec_fn)
        log.close()
        deadline = time.time() + 20
        while time.time() < deadline:
            if os.path.exists(sock):
                return
            if self.signd_proc.poll() is not None:
                break
            time.sleep(0.05)
        with open(self.signd_log) as f:
            fail(f"smartcert-signd did not start: {f.read()[-2000:]}")

    def stop_signd(self):
        if self.signd_proc is not None:
            self.signd_proc.terminate()
            try:
                rc = self.signd_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.signd_proc.kill()
                self.signd_proc.wait()
                rc = "a hang"
            self.signd_proc = None
            # A sanitizer report in the service (a leak, a race) shows as
            # its exit status.
            if rc != 0:
                with open(self.signd_log) as f:
                    fail(f"smartcert-signd did not stop cleanly ({rc}): {f.read()[-3000:]}")

    def set_time(self, t):
        """Move the service's clock (test builds); None = the real clock."""
        if t is None:
            try:
                os.unlink(self.fake_time_file)
            except FileNotFoundError:
                pass
        else:
            with open(self.fake_time_file + ".tmp", "w") as f:
                f.write(str(int(t)))
            os.replace(self.fake_time_file + ".tmp", self.fake_time_file)

    def restart_signd(self):
        """A configuration change reaches the service when it starts."""
        self.stop_signd()
        self.start_signd()

    def sc(self, *args, check=True, input=None, timeout=300, env=None):
        """Run `smartcert ARGS` against this deployment."""
        r = subprocess.run([SMARTCERT, *args], env=env or self.env, capture_output=True,
                           text=True, input=input, timeout=timeout)
        if check and r.returncode != 0:
            fail(f"smartcert {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def sc_json(self, *args):
        return json.loads(self.sc(*args, "--json").stdout)

    def close(self):
        self.stop_signd()
        if os.environ.get("SMARTCERT_KEEP_TEST_DIRS") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---- PKCS#11 gateway helpers (tests/pkcs11) ---------------------------------
# Everything a test needs to act as a signing gateway with PyKCS11: enrol a
# user, mint authorisation tokens (the real DER format of core/authz.asn,
# signed with the deployment's demo authorisation key, or any other key), and
# read the audit log.  Tokens minted here are judged by the real module.

def _der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, content):
    return bytes([tag]) + _der_len(len(content)) + content


def _der_int(v):
    b = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True)
    return tlv(0x02, b)


def _der_oid(dotted):
    parts = [int(x) for x in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def _der_time(t):
    import time as _time
    return tlv(0x18, _time.strftime("%Y%m%d%H%M%SZ", _time.gmtime(t)).encode())


HASH_OIDS = {"sha256": "2.16.840.1.101.3.4.2.1", "sha384": "2.16.840.1.101.3.4.2.2",
             "sha512": "2.16.840.1.101.3.4.2.3"}


def b64url(data):
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_private_key(path):
    from cryptography.hazmat.primitives import serialization
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def mint_token(d, user, key_id, digests, *, not_before=None, not_after=None,
               audience=None, issuer=None, max_signatures=1, token_id=None,
               key=None, purpose=0, version=1, now=None, raw_fields=None):
    """An authorisation token (base64url text).  digests: [(hash_name, bytes)].
    key: a `cryptography` private key (default: the deployment's demo key).
    raw_fields: {"version"|"purpose"|"max_signatures": DER bytes} replaces
    that field's encoding (for non-canonical encodings)."""
    import hashlib
    import time as _time
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    if key is None:
        key = load_private_key(d.demo_key_path())
    now = int(_time.time()) if now is None else now
    nb = now - 5 if not_before is None else not_before
    na = now + 300 if not_after is None else not_after
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = raw_fields or {}
    tbs = tlv(0x30, b"".join([
        raw.get("version", _der_int(version)),
        tlv(0x04, token_id if token_id is not None else os.urandom(16)),
        tlv(0x0C, (issuer or d.conf_get("authz.issuer", "smartcert-demo-authz")).encode()),
        tlv(0x04, hashlib.sha256(spki).digest()),
        tlv(0x0C, (audience or d.conf_get("authz.audience", "smartcert-signing")).encode()),
        tlv(0x0C, user.encode()),
        tlv(0x0C, key_id.encode()),
        raw.get("purpose", tlv(0x0A, bytes([purpose]))),
        tlv(0x30, b"".join(tlv(0x30, _der_oid(HASH_OIDS[h]) + tlv(0x04, v))
                            for h, v in digests)),
        _der_time(nb),
        _der_time(na),
        raw.get("max_signatures", _der_int(max_signatures)),
    ]))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig, alg = key.sign(tbs), tlv(0x30, _der_oid("1.3.101.112"))
    else:
        sig = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
        alg = tlv(0x30, _der_oid("1.2.840.10045.4.3.2"))
    return b64url(tlv(0x30, tbs + alg + tlv(0x03, b"\x00" + sig)))


def _dep_conf_get(self, key, default=None):
    """Last value of section.key in the deployment's smartcert.conf."""
    section, _, name = key.partition(".")
    cur, val = None, default
    with open(self.config) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line.startswith("[") and line.endswith("]"):
                cur = line[1:-1].strip()
            elif "=" in line and cur == section:
                k, _, v = line.partition("=")
                if k.strip() == name:
                    val = v.strip()
    return val


def _dep_conf_set(self, key, value, restart=True):
    """Set (replace every occurrence of) section.key in smartcert.conf; a
    running signing service is restarted to read it (restart=False when
    more keys follow)."""
    section, _, name = key.partition(".")
    out, cur, done = [], None, False
    with open(self.config) as f:
        lines = f.read().splitlines()
    for line in lines:
        s = line.split("#", 1)[0].strip()
        if s.startswith("[") and s.endswith("]"):
            if cur == section and not done:
                out.append(f"{name} = {value}")
                done = True
            cur = s[1:-1].strip()
        elif "=" in s and cur == section and s.partition("=")[0].strip() == name:
            if not done:
                out.append(f"{name} = {value}")
                done = True
            continue
        out.append(line)
    if not done:
        if cur != section:
            out.append(f"[{section}]")
        out.append(f"{name} = {value}")
    with open(self.config, "w") as f:
        f.write("\n".join(out) + "\n")
    # The signing service reads its configuration when it starts.
    if restart and getattr(self, "signd_proc", None) is not None:
        self.restart_signd()


def _dep_demo_key_path(self):
    p = self.conf_get("authz.demo_key", "authz-demo/authz-demo.key")
    return p if os.path.isabs(p) else os.path.join(os.path.dirname(self.config), p)


def _dep_enrol(self, user, key_type="p256", name=None, id_number=None):
    """Enrol a user with central key generation; returns `ca enrol --json`."""
    import hashlib
    idn = id_number or "Z" + hashlib.sha256(user.encode()).hexdigest()[:6].upper() + "(7)"
    env = dict(self.env)
    env["SC_TEST_ID_NUMBER"] = idn
    r = self.sc("ca", "enrol", "--user", user, "--name", name or f"Test {user}",
                "--id-number-source", "env:SC_TEST_ID_NUMBER", "--key-type", key_type,
                "--json", env=env)
    return json.loads(r.stdout)


def _dep_audit(self, user=None):
    """Audit records (of `user`, or all) as dicts (`smartcert audit show --json`)."""
    r = self.sc("audit", "show", *(("--user", user) if user else ()), "--json")
    text = r.stdout.strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(doc, dict):
        for k in ("records", "events", "audit"):
            if isinstance(doc.get(k), list):
                return doc[k]
        return [doc]
    return doc


Deployment.conf_get = _dep_conf_get
Deployment.conf_set = _dep_conf_set
Deployment.demo_key_path = _dep_demo_key_path
Deployment.enrol = _dep_enrol
Deployment.audit = _dep_audit


class Gateway:
    """The module loaded with PyKCS11 the way a gateway loads it, logged in
    as CKU_USER with the gateway PIN.  One per process (the module's state is
    per process); SMARTCERT_CONF names the deployment.  `d` is a Deployment,
    or anything with its config, module and gateway_pin (a child process)."""

    def __init__(self, d, login=True):
        import PyKCS11
        self.P = PyKCS11
        os.environ["SMARTCERT_CONF"] = d.config
        os.environ.pop("SOFTHSM2_CONF", None)
        self.lib = PyKCS11.PyKCS11Lib()
        self.lib.load(d.module)
        slots = self.lib.getSlotList(tokenPresent=True)
        if not slots:
            fail("the module shows no token")
        self.slot = slots[0]
        # The login state belongs to the application, not to one session:
        # `anchor` keeps it while signing sessions are replaced after errors.
        self.anchor = self.lib.openSession(self.slot, PyKCS11.CKF_SERIAL_SESSION)
        if login:
            self.anchor.login(d.gateway_pin)
        self.session = self.lib.openSession(self.slot, PyKCS11.CKF_SERIAL_SESSION)

    def new_session(self):
        return self.lib.openSession(self.slot, self.P.CKF_SERIAL_SESSION)

    def key(self, user, session=None):
        """(private key handle, key id, certificate DER) of the user's key."""
        P = self.P
        s = session or self.session
        keys = s.findObjects([(P.CKA_CLASS, P.CKO_PRIVATE_KEY), (P.CKA_LABEL, user)])
        if len(keys) != 1:
            fail(f"expected one private key labelled {user}, found {len(keys)}")
        kid = bytes(s.getAttributeValue(keys[0], [P.CKA_ID])[0]).decode()
        certs = s.findObjects([(P.CKA_CLASS, P.CKO_CERTIFICATE), (P.CKA_ID, kid.encode())])
        if len(certs) != 1:
            fail(f"expected one certificate with CKA_ID {kid}, found {len(certs)}")
        der = bytes(s.getAttributeValue(certs[0], [P.CKA_VALUE])[0])
        return keys[0], kid, der

    def sign(self, key, mech, data, token, session=None, length_query=True):
        """C_SignInit -> C_Login(CKU_CONTEXT_SPECIFIC, token) -> C_Sign.
        Raises PyKCS11Error with the failing call's CK_RV.  token None skips
        the context login."""
        P = self.P
        s = session or self.session
        rv = s.lib.C_SignInit(s.session, mech.to_native(), key)
        if rv != P.CKR_OK:
            raise P.PyKCS11Error(rv)
        try:
            if token is not None:
                s.login(token, user_type=P.CKU_CONTEXT_SPECIFIC)
            sig = P.ckbytelist()
            data = P.ckbytelist(data)
            if length_query:
                rv = s.lib.C_Sign(s.session, data, sig)   # NULL buffer: length only
                if rv != P.CKR_OK:
                    raise P.PyKCS11Error(rv)
            else:
                sig = P.ckbytelist(bytes(1024))
            rv = s.lib.C_Sign(s.session, data, sig)
            if rv != P.CKR_OK:
                raise P.PyKCS11Error(rv)
            return bytes(sig)
        except P.PyKCS11Error:
            # A refused signature may leave the operation active (a failed
            # context login keeps it for another token): start afresh.
            if session is None:
                self.session.closeSession()
                self.session = self.new_session()
            raise

    def close(self):
        try:
            self.lib.closeAllSessions(self.slot)
        except Exception:
            pass


def ckr_of(exc):
    """The CK_RV carried by a PyKCS11Error."""
    return getattr(exc, "value", None)


def expect_ckr(fn, ckr, msg):
    """Run fn(); it must raise PyKCS11Error with CK_RV `ckr`."""
    import PyKCS11
    try:
        fn()
    except PyKCS11.PyKCS11Error as e:
        check(ckr_of(e) == ckr, f"{msg}: {PyKCS11.CKR[ckr]} (got {PyKCS11.CKR.get(ckr_of(e), ckr_of(e))})")
        return
    fail(f"{msg}: expected {PyKCS11.CKR[ckr]}, the call succeeded")
