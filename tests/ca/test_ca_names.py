#!/usr/bin/env python3
"""Names that reach certificates are clean, and the CLI never prints
untrusted text raw.

- `ca enrol --name`, `ca enrol --batch` and `ca issue --csr` refuse C0
  controls (newline, TAB, ESC), DEL, C1 controls (U+0085, U+009B), the
  bidirectional controls (U+202E, U+2066, U+200F, U+061C), a byte order
  mark and bytes that are not UTF-8, with exit 2 and a message that names
  the character (U+XXXX) without echoing it;
- leading, trailing and doubled spaces are refused too (not normalised:
  the name is the holder's, as on the identity card), with a message
  saying how to give it;
- a clean name (Latin with single spaces, Chinese) is accepted and is the
  certificate's CN byte for byte, without the whitespace or non-printable
  characters zlint's e_subject_dn_not_printable_characters and
  w_subject_dn_{leading,trailing}_whitespace look for;
- what the CLI prints from input or the store (error messages quoting a
  user id, `ca show`, batch error lines) carries no control character:
  an ESC sequence that would set the terminal title comes out as \\x1b.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import SMARTCERT, Deployment, check  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

EXIT_USAGE = 2
BAD = [
    ("newline", "CHAN\nTai Man", "U+000A"),
    ("TAB", "CHAN\tTai Man", "U+0009"),
    ("ESC (terminal title)", "CHAN \x1b]0;pwned\x07Tai", "U+001B"),
    ("DEL", "CHAN\x7fTai", "U+007F"),
    ("C1 NEL", "CHAN\u0085Tai", "U+0085"),
    ("C1 CSI", "CHAN\u009b31mTai", "U+009B"),
    ("right-to-left override", "CHAN \u202eiaT", "U+202E"),
    ("first-strong isolate", "CHAN \u2068Tai", "U+2068"),
    ("right-to-left mark", "CHAN\u200fTai", "U+200F"),
    ("Arabic letter mark", "CHAN\u061cTai", "U+061C"),
    ("byte order mark", "\ufeffCHAN Tai", "U+FEFF"),
]
SPACES = [
    ("leading space", " CHAN Tai Man", "leading"),
    ("trailing space", "CHAN Tai Man ", "trailing"),
    ("doubled space", "CHAN  Tai Man", "doubled"),
]


def clean_output(text):
    return not any(ord(ch) < 0x20 and ch != "\n" or 0x7f <= ord(ch) <= 0x9f or
                   ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\ufeff"
                   for ch in text)


def run(d, args, env=None):
    r = subprocess.run([SMARTCERT, *args], env=env or d.env, capture_output=True, timeout=120)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


with Deployment() as d:
    env = dict(d.env, IDN="B1234560")
    n = 0
    for what, name, cp in BAD + SPACES:
        n += 1
        env["IDN"] = f"B12{n:05d}"
        code, out, err = run(d, ["ca", "enrol", "--user", f"u{n}", "--name", name,
                                 "--id-number-source", "env:IDN"], env)
        check(code == EXIT_USAGE and cp in err and clean_output(err) and err.count("\n") == 1,
              f"--name with {what}: refused, exit 2, '{cp}' named, nothing raw: {err.strip()}")
    # bytes that are not UTF-8
    r = subprocess.run([os.fsencode(SMARTCERT), b"ca", b"enrol", b"--user", b"ub", b"--name",
                        b"CHAN \xff\xfe Tai", b"--id-number-source", b"env:IDN"], env=env,
                       capture_output=True, timeout=120)
    err = r.stderr.decode("utf-8", "replace")
    check(r.returncode == EXIT_USAGE and "UTF-8" in err and "\ufffd" not in err,
          f"--name with bytes that are not UTF-8: refused without echoing them: {err.strip()}")
    listed = d.sc("ca", "list", "--json").stdout
    check(all(f'"u{i}"' not in listed for i in range(1, n + 1)), "no refused holder was enrolled")

    # clean names are accepted and become the CN exactly
    for uid, name in (("latin", "CHAN Tai Man"), ("chinese", "陳大文"), ("hyphen", "O'NEIL-SMITH Mary Ann")):
        n += 1
        env["IDN"] = f"B12{n:05d}"
        code, out, err = run(d, ["ca", "enrol", "--user", uid, "--name", name,
                                 "--id-number-source", "env:IDN", "--json"], env)
        check(code == 0, f"clean name {name!r} accepted {err.strip()}")
        serial = json.loads(out)["serial"]
        pem = d.sc("ca", "export", "--serial", serial).stdout.encode()
        cert = x509.load_pem_x509_certificate(pem)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        check(cn == name and cn == cn.strip() and "  " not in cn and clean_output(cn),
              f"{uid}: CN is the name exactly, no leading/trailing/doubled whitespace, printable")

    # batch rows: refused per row, the line printed escaped
    csv = os.path.join(d.tmp, "names.csv")
    with open(csv, "w", encoding="utf-8") as f:
        f.write("user_id,name,id_number,dob,profile,key_type\n")
        f.write("bgood,GOOD Name,C1000001,,,\n")
        f.write("bbad,\"BAD \x1b]0;pwned\x07 Name\",C1000002,,,\n")
        f.write("bsp,BAD  Name,C1000003,,,\n")
        f.write("\x1b]0;x\x07,Name,C1000004,,,\n")
    code, out, err = run(d, ["ca", "enrol", "--batch", csv])
    check(code != 0 and "U+001B" in err and "doubled" in err and clean_output(err + out),
          f"batch: bad names refused per row, printed without control characters: {err.strip()}")
    listed = d.sc("ca", "list", "--json").stdout
    check('"bgood"' in listed and '"bbad"' not in listed and '"bsp"' not in listed,
          "batch: the good row enrolled, the bad ones not")

    # a user id with an escape sequence, echoed by errors: escaped
    for args in (["ca", "show", "--user", "\x1b]0;pwned\x07"],
                 ["ca", "suspend", "--user", "\x1b]0;pwned\x07"],
                 ["ca", "enrol", "--user", "\x1b]0;pwned\x07", "--name", "X", "--id-number-source",
                  "env:IDN"],
                 ["ca", "\x1b]0;pwned\x07"]):
        code, out, err = run(d, args, env)
        check(code != 0 and clean_output(out + err) and "\x1b" not in err,
              f"{args[1]}: the hostile user id is not printed raw: {err.strip()[:120]}")
    code, out, err = run(d, ["ca", "show", "--user", "chinese"])
    check(code == 0 and "陳大文" in out and clean_output(out), "ca show prints a clean name as is")

    # ca issue --csr: the request's subject is checked the same way
    key = ec.generate_private_key(ec.SECP256R1())
    for what, cn in (("ESC", "gw\x1b[31m.example"), ("bidi", "gw\u202e.example"),
                     ("trailing space", "gw.example ")):
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .sign(key, hashes.SHA256()))
        path = os.path.join(d.tmp, "bad.csr")
        open(path, "wb").write(csr.public_bytes(serialization.Encoding.PEM))
        code, out, err = run(d, ["ca", "issue", "--csr", path, "--profile", "tls-client"])
        check(code == EXIT_USAGE and "subject attribute 1 (CN)" in err and clean_output(err),
              f"CSR subject with {what}: refused, exit 2: {err.strip()[:140]}")
print("all name checks passed")
