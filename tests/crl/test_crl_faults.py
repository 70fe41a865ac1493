"""Faults: an unusable output directory, an unavailable HSM (bad PIN, bad
module path) and a corrupt revocation record each fail with a clear error,
exit non-zero, and leave the previously published CRLs byte-for-byte as
they were (and no staging files behind)."""
import glob
import hashlib
import os

from crlcommon import Deployment, check, config_copy, crl_dir, fill, verify_all, skip_unless
from lmdbedit import dump, load, section  # noqa: E402

skip_unless("mdb_dump", "mdb_load")


def snapshot(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(crl_dir(d), "*"))):
        with open(f, "rb") as fh:
            out[os.path.basename(f)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def leftovers(d):
    return [f for f in os.listdir(crl_dir(d)) if f.endswith(".new")]


with Deployment() as d:
    fill(d, "--certs", "200", "--revoked", "20")
    first = d.sc_json("crl", "publish", "--pem")
    before = snapshot(d)
    check(len(before) > 60, f"{len(before)} files published")

    # 1. output directory under a regular file: cannot exist, even for root.
    blocker = os.path.join(d.tmp, "not-a-dir")
    with open(blocker, "w") as f:
        f.write("x")
    r = d.sc("crl", "publish", "--out", os.path.join(blocker, "crl"), check=False)
    check(r.returncode != 0 and "not-a-dir" in r.stderr,
          f"output under a file: exit {r.returncode}, error names the path")
    if os.geteuid() != 0:
        ro = os.path.join(d.tmp, "ro")
        os.makedirs(ro)
        os.chmod(ro, 0o555)
        r = d.sc("crl", "publish", "--out", ro, check=False)
        check(r.returncode != 0 and "writable" in r.stderr, "read-only directory refused clearly")
        os.chmod(ro, 0o755)
    else:
        print("# running as root: permission bits do not stop writes; the read-only "
              "directory case is covered by the path-under-a-file case only")
    check(snapshot(d) == before, "previous CRLs untouched")
    nxt = d.sc_json("crl", "publish", "--delta")
    check(nxt["number"] == first["number"] + 1,
          "an unusable directory consumed no CRL number")
    before = snapshot(d)

    # 2. HSM unavailable: wrong PIN, then a module path that does not exist.
    wrong = os.path.join(d.dir, "secrets", "wrong.pin")
    with open(wrong, "w") as f:
        f.write("000000\n")
    os.chmod(wrong, 0o600)
    env = dict(d.env, SMARTCERT_CONF=config_copy(d, "bad-pin.conf", "hsm", "pin_source",
                                                 "file:secrets/wrong.pin"))
    r = d.sc("crl", "publish", check=False, env=env)
    check(r.returncode == 5, f"wrong backend PIN: exit 5 (HSM problem), got {r.returncode}: "
          f"{r.stderr.strip()}")
    env = dict(d.env, SMARTCERT_CONF=config_copy(d, "bad-module.conf", "hsm", "module",
                                                 "/nonexistent/libpkcs11.so"))
    r = d.sc("crl", "publish", check=False, env=env)
    check(r.returncode == 5 and "/nonexistent/libpkcs11.so" in r.stderr,
          f"missing backend module: exit 5 naming the path: {r.stderr.strip()}")
    check(snapshot(d) == before and not leftovers(d), "previous CRLs untouched, no staging files")

    # 3. Building reads only the revocation index: with every certificate
    #    record corrupted, a publish still succeeds with the same entries.
    store = os.path.join(d.dir, "store")

    def corrupt(db, every):
        lines = dump(store, db)
        first, end = section(lines)
        keys = lines[first:end:2]
        bad = lines[:first]
        for k in (keys if every else keys[:1]):
            bad += [k, " 01ff"]
        load(store, bad + ["DATA=END", ""], db)
        return len(keys)

    n = corrupt("certs", True)
    again = d.sc_json("crl", "publish")
    check(n >= 200 and again["entries"] == first["entries"],
          f"with all {n} certificate records corrupt, publish still lists {again['entries']} "
          "entries: it reads only the revocation index")
    before = snapshot(d)

    # 4. a corrupt revocation-index record.
    corrupt("revoked", False)
    r = d.sc("crl", "publish", check=False)
    check(r.returncode == 7 and "revoked" in r.stderr.lower(),
          f"corrupt revocation record: exit 7 (storage) with a clear error: {r.stderr.strip()}")
    check(snapshot(d) == before and not leftovers(d), "previous CRLs untouched, no staging files")
    verify_all(d)
