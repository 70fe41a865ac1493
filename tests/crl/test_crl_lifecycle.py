"""Real certificates through the CA: a revocation lands in the next CRL of
exactly its partition (and not the others), in full.crl and in the deltas;
`openssl verify -crl_check` then fails the revoked certificate with
"certificate revoked" and passes a valid one; a hold is certificateHold, a
resume is removeFromCRL in the delta and gone from the next full CRL."""
import json
import os
import subprocess

from cryptography import x509
from cryptography.x509 import ReasonFlags

from crlcommon import (Deployment, check, crl_dir, crllint, fail, load, skip_unless,
                       verify_all)

skip_unless("openssl", "certtool")


def enrol(d, uid, n):
    env = dict(d.env, CRL_TEST_IDNUM=f"Z{n:06d}(3)")
    r = d.sc("ca", "enrol", "--user", uid, "--name", f"Holder {n}",
             "--id-number-source", "env:CRL_TEST_IDNUM", "--json", env=env)
    return json.loads(r.stdout)


def export(d, serial, path):
    """Export the certificate; return its (CRL distribution point, freshestCRL) URIs."""
    d.sc("ca", "export", "--serial", serial, "--out", path)
    # Read through openssl: our certificates' policy OIDs (2.25.<UUID>)
    # have an arc wider than 64 bits, which some parsers refuse.
    out = []
    for ext in ("crlDistributionPoints", "freshestCRL"):
        r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-ext", ext],
                           capture_output=True, text=True, check=True)
        uris = [ln.strip()[4:] for ln in r.stdout.splitlines() if ln.strip().startswith("URI:")]
        out.append(uris[0] if uris else "")
    return tuple(out)


def openssl_verify(d, cert_path, *crl_paths, deltas=False):
    args = []
    for i, crl in enumerate(crl_paths):
        pem = os.path.join(d.tmp, f"verify-{i}.pem")
        subprocess.run(["openssl", "crl", "-inform", "DER", "-in", crl, "-out", pem],
                       check=True, capture_output=True)
        args += ["-CRLfile", pem]
    r = subprocess.run(["openssl", "verify", "-crl_check", *(["-use_deltas"] if deltas else []),
                        "-CAfile", os.path.join(d.dir, "ca", "chain.pem"), *args, cert_path],
                       capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def openssl_verify_chain(d, cert_path, crl_path, policy):
    """The whole path, as RFC 5280 path validation does it: revocation of
    every certificate (-crl_check_all: the holder's on its partition CRL,
    the issuing CA's on the root's CRL) and an explicit policy."""
    args = []
    for i, crl in enumerate((crl_path, os.path.join(crl_dir(d), "root.crl"))):
        pem = os.path.join(d.tmp, f"chain-{i}.pem")
        subprocess.run(["openssl", "crl", "-inform", "DER", "-in", crl, "-out", pem],
                       check=True, capture_output=True)
        args += ["-CRLfile", pem]
    r = subprocess.run(["openssl", "verify", "-crl_check_all", "-x509_strict", "-policy_check",
                        "-explicit_policy", "-policy", policy,
                        "-CAfile", os.path.join(d.dir, "ca", "chain.pem"), *args, cert_path],
                       capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def gnutls_verify(d, cert_path, crl_path):
    """GnuTLS certtool --verify of the holder against the chain and one CRL:
    (verified?, output)."""
    pem = os.path.join(d.tmp, "gnutls-crl.pem")
    subprocess.run(["openssl", "crl", "-inform", "DER", "-in", crl_path, "-out", pem],
                   check=True, capture_output=True)
    r = subprocess.run(["certtool", "--verify", "--load-ca-certificate",
                        os.path.join(d.dir, "ca", "chain.pem"), "--load-crl", pem,
                        "--infile", cert_path], capture_output=True, text=True)
    out = r.stdout + r.stderr
    return r.returncode == 0 and "Chain verification output: Verified" in out, out


def serials_of(path):
    return {e.serial_number: e for e in load(path)}


with Deployment() as d:
    tmp = d.tmp
    users = {}
    # Enrol until three users sit in three different partitions.
    n = 0
    while len(users) < 3 and n < 60:
        n += 1
        r = enrol(d, f"crl-user-{n}", n)
        if r["partition"] not in {u["partition"] for u in users.values()}:
            users[f"crl-user-{n}"] = r
    check(len(users) == 3, f"three users in distinct partitions after {n} enrolments")
    (ua, a), (ub, b), (uc, c) = users.items()
    certs = {}
    for uid, r in users.items():
        path = os.path.join(tmp, f"{uid}.pem")
        cdp, fresh = export(d, r["serial"], path)
        certs[uid] = (path, cdp)
        check(cdp.endswith(f"/part-{r['partition']}.crl") and
              fresh == cdp[:-4] + "-delta.crl",
              f"{uid}: CDP names part-{r['partition']}.crl, freshestCRL its delta")

    p1 = d.sc_json("crl", "publish")
    code, out = openssl_verify(d, certs[ua][0], os.path.join(crl_dir(d), f"part-{a['partition']}.crl"))
    check(code == 0, f"before revocation {ua} verifies against its partition CRL ({out.strip()})")

    d.sc("ca", "revoke", "--serial", a["serial"], "--reason", "keyCompromise",
         "--invalidity-date", "2026-01-02T03:04:05Z")
    p2 = d.sc_json("crl", "publish")
    sa = int(a["serial"], 16)
    for part in range(16):
        s = serials_of(os.path.join(crl_dir(d), f"part-{part}.crl"))
        if (sa in s) != (part == a["partition"]):
            fail(f"revoked serial on part-{part}.crl: {sa in s} (its partition is {a['partition']})")
    check(True, f"revocation appears on part-{a['partition']}.crl and on no other partition")
    e = serials_of(os.path.join(crl_dir(d), "full.crl")).get(sa)
    check(e is not None and crllint.entry_reason(e) == ReasonFlags.key_compromise,
          "full.crl lists it with reason keyCompromise")
    inv = e.extensions.get_extension_for_oid(x509.oid.CRLEntryExtensionOID.INVALIDITY_DATE)
    check(inv.value.invalidity_date.year == 2026 and not inv.critical,
          "invalidityDate carried, non-critical")
    for name in (f"part-{a['partition']}-delta.crl", "full-delta.crl"):
        dl = load(os.path.join(crl_dir(d), name))
        check(sa in {x.serial_number for x in dl} and crllint.delta_base(dl) == p1["number"],
              f"{name} lists it, base {p1['number']}")

    # the whole chain: the issuing CA's revocation through the root's CRL,
    # the adult policy required explicitly (the CA certificates carry it)
    code, out = openssl_verify_chain(d, certs[ub][0],
                                     os.path.join(crl_dir(d), f"part-{b['partition']}.crl"),
                                     "2.999.4109.1.1")
    check(code == 0, f"openssl verify -crl_check_all -explicit_policy -policy adult: OK "
          f"({out.strip()})")
    code, out = openssl_verify_chain(d, certs[ub][0],
                                     os.path.join(crl_dir(d), f"part-{b['partition']}.crl"),
                                     "2.999.4109.1.2")
    check(code != 0 and "policy" in out.lower(),
          f"... requiring the minor policy instead fails on the policy ({out.strip()[-80:]})")
    code, out = openssl_verify_chain(d, certs[ua][0],
                                     os.path.join(crl_dir(d), f"part-{a['partition']}.crl"),
                                     "2.999.4109.1.1")
    check(code != 0 and "certificate revoked" in out,
          f"... and the revoked holder fails with 'certificate revoked' ({out.strip()[-80:]})")
    part_a = os.path.join(crl_dir(d), f"part-{a['partition']}.crl")
    code, out = openssl_verify(d, certs[ua][0], part_a)
    check(code != 0 and "certificate revoked" in out, "openssl verify -crl_check: revoked cert fails "
          "with 'certificate revoked'")
    code, out = openssl_verify(d, certs[ua][0], os.path.join(crl_dir(d), "full.crl"))
    check(code != 0 and "certificate revoked" in out, "... also against full.crl")
    code, out = openssl_verify(d, certs[ub][0], os.path.join(crl_dir(d), f"part-{b['partition']}.crl"))
    check(code == 0, f"a valid certificate passes against its partition CRL ({out.strip()})")
    code, out = openssl_verify(d, certs[ub][0], os.path.join(crl_dir(d), "full.crl"))
    check(code == 0, "a valid certificate passes against full.crl")

    # Hold and release.
    d.sc("ca", "suspend", "--user", uc)
    p3 = d.sc_json("crl", "publish")
    scn = int(c["serial"], 16)
    e = serials_of(os.path.join(crl_dir(d), f"part-{c['partition']}.crl")).get(scn)
    check(e is not None and crllint.entry_reason(e) == ReasonFlags.certificate_hold,
          "a suspended holder's certificate is listed as certificateHold")
    code, out = openssl_verify(d, certs[uc][0], os.path.join(crl_dir(d), f"part-{c['partition']}.crl"))
    check(code != 0 and "certificate revoked" in out, "openssl refuses the held certificate")
    d.sc("ca", "resume", "--user", uc)
    # what --watch does per batch: deltas and the changed partition in full
    p4 = d.sc_json("crl", "publish", "--changed-partitions")
    check(not p4["full"] and p4["partitions_full"] == 1,
          "one watcher batch: deltas, and the one changed partition republished in full")
    ok, out = gnutls_verify(d, certs[uc][0], os.path.join(crl_dir(d), f"part-{c['partition']}.crl"))
    check(ok, "GnuTLS, given the republished partition CRL, passes the resumed holder within "
          "the batch")
    ok, out = gnutls_verify(d, certs[uc][0],
                            os.path.join(crl_dir(d), f"part-{c['partition']}-delta.crl"))
    print(f"# GnuTLS given the delta alone (removeFromCRL): "
          f"{'verified' if ok else 'NOT verified'}: {out.strip().splitlines()[-1][:120]}")
    ok, out = gnutls_verify(d, certs[ua][0], os.path.join(crl_dir(d), f"part-{a['partition']}.crl"))
    check(not ok and "revoked" in out.lower(), "GnuTLS refuses the revoked holder on its partition CRL")
    dl = serials_of(os.path.join(crl_dir(d), f"part-{c['partition']}-delta.crl"))
    check(scn in dl and crllint.entry_reason(dl[scn]) == ReasonFlags.remove_from_crl and
          crllint.delta_base(load(os.path.join(crl_dir(d), f"part-{c['partition']}-delta.crl")))
          == p3["number"], "resume: the delta lists removeFromCRL against the full CRL with the hold")
    check(scn in serials_of(os.path.join(crl_dir(d), "full-delta.crl")), "... also in full-delta.crl")
    p5 = d.sc_json("crl", "publish")
    check(scn not in serials_of(os.path.join(crl_dir(d), f"part-{c['partition']}.crl")) and
          scn not in serials_of(os.path.join(crl_dir(d), "full.crl")),
          "the next full CRLs no longer list the released certificate")
    check(sa in serials_of(os.path.join(crl_dir(d), "full.crl")), "the revoked one stays")
    code, out = openssl_verify(d, certs[uc][0], os.path.join(crl_dir(d), f"part-{c['partition']}.crl"))
    check(code == 0, "the resumed certificate verifies again")
    # Delta semantics as OpenSSL applies them: a revocation published only
    # in the delta is seen with -use_deltas, not from the older full CRL.
    d.sc("ca", "revoke", "--serial", b["serial"], "--reason", "superseded")
    p6 = d.sc_json("crl", "publish", "--delta")
    part_b = os.path.join(crl_dir(d), f"part-{b['partition']}.crl")
    delta_b = os.path.join(crl_dir(d), f"part-{b['partition']}-delta.crl")
    code, out = openssl_verify(d, certs[ub][0], part_b)
    check(code == 0, "revoked after the full CRL: the full CRL alone still passes it")
    code, out = openssl_verify(d, certs[ub][0], part_b, delta_b, deltas=True)
    check(code != 0 and "certificate revoked" in out,
          f"openssl verify -crl_check -use_deltas (full + delta): revoked ({out.strip()})")
    nums = [p["number"] for p in (p1, p2, p3, p4, p5, p6)]
    check(nums == sorted(set(nums)), f"CRL numbers strictly increase {nums}")
    verify_all(d)

    # Expiry in the deltas (`ca sweep` with the clock moved past notAfter):
    # a certificate expired while on hold leaves as removeFromCRL against
    # the base that lists its hold; an ordinary expiry, never on any CRL,
    # is not listed at all.
    held = enrol(d, "crl-expire-held", 900)
    plain = enrol(d, "crl-expire-plain", 901)
    d.sc("ca", "suspend", "--user", "crl-expire-held")
    p7 = d.sc_json("crl", "publish")
    sh, sp = int(held["serial"], 16), int(plain["serial"], 16)
    check(sh in serials_of(os.path.join(crl_dir(d), "full.crl")), "the held certificate is on the base")
    import datetime
    na = max(datetime.datetime.fromisoformat(r["not_after"].replace("Z", "+00:00")).timestamp()
             for r in (held, plain))
    later = dict(d.env, SMARTCERT_FAKE_TIME=str(int(na) + 86400))
    swept = json.loads(d.sc("ca", "sweep", "--json", env=later).stdout)
    check(swept["expired"] >= 2, f"the sweep expires both ({swept})")
    r = d.sc("crl", "publish", "--delta", "--json", env=later)
    dl = serials_of(os.path.join(crl_dir(d), "full-delta.crl"))
    check(crllint.delta_base(load(os.path.join(crl_dir(d), "full-delta.crl"))) == p7["number"],
          "the delta is against the base with the hold")
    check(sh in dl and crllint.entry_reason(dl[sh]) == ReasonFlags.remove_from_crl,
          "expired while on hold: removeFromCRL in the delta")
    check(sp not in dl, "an ordinary expiry is not in the delta: it was never on a CRL")
    check(all(crllint.entry_reason(e) != ReasonFlags.remove_from_crl or s == sh for s, e in dl.items()),
          f"no other removeFromCRL entry ({len(dl)} entries)")
