#!/usr/bin/python3
"""The accounts of a deployment made with `init --service-user`: the
signing service runs as the service account, which owns everything but the
demo authorisation key (another trust domain: it cannot read it); a gateway
running under its own unprivileged account signs with a token through the
service, and every way around the service fails:

* it cannot read the backend PIN, the HSM token files, the store, the
  deployment's configuration or the demo authorisation key;
* loading the backend HSM module itself finds no usable token;
* it gets no signature without a token, nor for a digest the token does
  not list.

Needs root (CI runs as root) to create the account; skipped otherwise."""
import grp
import hashlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check, fail, mint_token, pykcs11_or_skip, run_json_child  # noqa: E402

P = pykcs11_or_skip()


def child(spec):
    """Runs as the gateway account."""
    import PyKCS11 as P
    out = {"uid": os.getuid()}
    for name, path in spec["secrets"].items():
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                open(path, "rb").read(1)
            out[name] = "readable"
        except PermissionError:
            out[name] = "denied"
        except OSError as e:
            out[name] = f"error {e.errno}"
    # The backend module directly, with the deployment's own SoftHSMv2 config
    # (NSS's databases are the files checked above: loaded without its
    # initialisation string, NSS shows nobody a token whatever the files).
    os.environ["SOFTHSM2_CONF"] = spec["softhsm_conf"]
    try:
        if spec["nss"]:
            raise RuntimeError("nss")
        lib = P.PyKCS11Lib()
        lib.load(spec["backend_module"])
        slots = lib.getSlotList(tokenPresent=True)
        labels = [lib.getTokenInfo(s).label.strip() for s in slots]
        out["backend"] = "token visible" if "smartcert-backend" in labels else "no token"
    except P.PyKCS11Error as e:
        out["backend"] = f"refused {e}"
    except RuntimeError:
        out["backend"] = "not tried"
    os.environ.pop("SOFTHSM2_CONF", None)

    os.environ["SMARTCERT_CONF"] = spec["gateway_conf"]
    lib = P.PyKCS11Lib()
    lib.load(spec["module"])
    slot = lib.getSlotList(tokenPresent=True)[0]
    anchor = lib.openSession(slot, P.CKF_SERIAL_SESSION)
    anchor.login(open(spec["credential_file"]).read().strip())
    s = lib.openSession(slot, P.CKF_SERIAL_SESSION)
    key = s.findObjects([(P.CKA_CLASS, P.CKO_PRIVATE_KEY), (P.CKA_LABEL, spec["user"])])[0]
    mech = P.Mechanism(P.CKM_ECDSA, None)
    dg = bytes.fromhex(spec["digest"])

    # No token at all.
    rv = s.lib.C_SignInit(s.session, mech.to_native(), key)
    buf = P.ckbytelist([0] * 64)
    rv2 = s.lib.C_Sign(s.session, P.ckbytelist(dg), buf)
    out["no-token"] = P.CKR.get(rv2, rv2) if rv == P.CKR_OK else f"init {P.CKR.get(rv, rv)}"
    s.closeSession()
    # A digest the token does not list.
    s = lib.openSession(slot, P.CKF_SERIAL_SESSION)
    other = hashlib.sha256(b"not approved").digest()
    s.lib.C_SignInit(s.session, mech.to_native(), key)
    s.login(spec["token"], user_type=P.CKU_CONTEXT_SPECIFIC)
    rv = s.lib.C_Sign(s.session, P.ckbytelist(other), P.ckbytelist([0] * 64))
    out["other-digest"] = P.CKR.get(rv, rv)
    s.closeSession()
    # The approved digest: a refused digest did not spend the token.
    s = lib.openSession(slot, P.CKF_SERIAL_SESSION)
    s.lib.C_SignInit(s.session, mech.to_native(), key)
    s.login(spec["token"], user_type=P.CKU_CONTEXT_SPECIFIC)
    buf = P.ckbytelist([0] * 64)
    rv = s.lib.C_Sign(s.session, P.ckbytelist(dg), buf)
    out["approved"] = P.CKR.get(rv, rv)
    out["sig"] = bytes(buf).hex() if rv == P.CKR_OK else ""
    print(json.dumps(out))


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root to create the gateway account", file=sys.stderr)
        sys.exit(77)
    if shutil.which("useradd") is None:
        print("SKIP: no useradd", file=sys.stderr)
        sys.exit(77)
    names = ["scgw" + secrets.token_hex(4), "scsvc" + secrets.token_hex(4)]
    for name in names:
        subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                        "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        run(*names)
    finally:
        for name in names:
            subprocess.run(["userdel", name], check=False)
            subprocess.run(["groupdel", name], check=False, stderr=subprocess.DEVNULL)


def as_account(pw, groups=()):
    def drop():
        os.setgroups(list(groups))
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return drop


def run(account, service):
    pw = pwd.getpwnam(account)
    spw = pwd.getpwnam(service)
    with Deployment("--service-user", service, prefix="p11-unpriv-", signd=False) as d:
        # The tree down to the deployment is traversable; what is private
        # stays private by init's own modes.
        os.chmod(d.tmp, 0o755)
        for sub in ("store", "secrets", "hsm", "smartcert.conf", "checkpoints"):
            check(os.stat(os.path.join(d.dir, sub)).st_uid == spw.pw_uid,
                  f"init --service-user: {sub} belongs to the service account")
        demo_key = os.path.join(d.dir, "authz-demo", "authz-demo.key")
        check(os.stat(os.path.join(d.dir, "authz-demo")).st_uid == 0,
              "... but the demo authorisation key stays with whoever ran init")
        r = subprocess.run([sys.executable, "-c", f"open({demo_key!r}).read()"],
                           preexec_fn=as_account(spw), capture_output=True, text=True)
        check(r.returncode != 0 and "PermissionError" in r.stderr,
              "the signing service's account cannot read the demo authorisation key")
        d.conf_set("signd.socket_group", account)
        # As systemd's SupplementaryGroups= does: the service is in the
        # gateways' group, to give its socket to them.
        d.start_signd(preexec_fn=as_account(spw, [pw.pw_gid]))
        enrolled = d.enrol("resident", "p256")
        sock = os.stat(os.path.join(d.dir, "run", "signd.sock"))
        check(sock.st_gid == grp.getgrnam(account).gr_gid and sock.st_mode & 0o777 == 0o660,
              "the service socket belongs to the gateway group, mode 0660")

        # The gateway's own credential, handed over to its account.
        cred = os.path.join(d.tmp, "gw.credential")
        shutil.copy(d.info["gateway_pin_file"], cred)
        os.chown(cred, pw.pw_uid, pw.pw_gid)
        os.chmod(cred, 0o600)

        kid = enrolled.get("key_id") or enrolled["keys"][0]["key_id"]
        dg = hashlib.sha256(b"approved by the resident").digest()
        token = mint_token(d, "resident", kid, [("sha256", dg)])
        hsm_conf = os.path.join(d.dir, "hsm", "softhsm2.conf")
        spec = {
            "module": d.module, "gateway_conf": d.info["gateway_config"],
            "credential_file": cred, "user": "resident", "digest": dg.hex(), "token": token,
            "backend_module": d.info["backend_module"], "softhsm_conf": hsm_conf,
            "secrets": {
                "backend.pin": d.info["backend_pin_file"],
                "hsm tokens": os.path.join(d.dir, "hsm", "tokens"),
                "store": os.path.join(d.dir, "store", "data.mdb"),
                "store dir": os.path.join(d.dir, "store"),
                "smartcert.conf": d.config,
                "demo authz key": os.path.join(d.dir, "authz-demo", "authz-demo.key"),
                "gateway credentials": d.info["gateway_pin_file"],
            },
        }
        spec["nss"] = d.info.get("backend") == "nss"
        if spec["nss"]:
            # the databases are the token: the files are what count
            del spec["secrets"]["hsm tokens"]
            for db in ("nssdb", "nssdb-ocsp"):
                spec["secrets"][f"hsm {db}"] = os.path.join(d.dir, "hsm", db)
                spec["secrets"][f"{db} keys"] = os.path.join(d.dir, "hsm", db, "key4.db")

        as_gateway = as_account(pw)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCERT_CONF")}
        res = run_json_child(__file__, spec, env, preexec_fn=as_gateway)
        check(res["uid"] == pw.pw_uid, f"the child ran as the gateway account {account}")
        for what in spec["secrets"]:
            check(res[what] == "denied", f"gateway cannot read {what} ({res[what]})")
        if not spec["nss"]:
            check(res["backend"] != "token visible",
                  f"the backend HSM module shows the gateway no token ({res['backend']})")
        check(res["no-token"] == "CKR_USER_NOT_LOGGED_IN", f"no signature without a token ({res['no-token']})")
        check(res["other-digest"] == "CKR_FUNCTION_REJECTED",
              f"no signature for a digest the token does not list ({res['other-digest']})")
        check(res["approved"] == "CKR_OK" and len(res["sig"]) == 128,
              f"the approved digest is signed through the service ({res['approved']})")
        recs = [x for x in d.audit("resident") if x.get("kind") == "sign" and x.get("outcome") == "ok"]
        check(len(recs) == 1 and recs[0].get("actor", "").startswith("gateway:default uid="),
              f"the signature's audit record names the gateway ({recs[-1].get('actor') if recs else None})")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        child(json.loads(sys.argv[2]))
    else:
        main()
