"""Publishing at a few thousand (synthetic) revocations: every file verifies
with openssl, GnuTLS certtool and Python cryptography, passes the CRL lints,
partitions hold exactly their entries, full.crl is their union, deltas name
the right base, numbers only grow, PEM copies match, `crl show` reports."""
import json
import os

from cryptography import x509

from crlcommon import (Deployment, ca_for, check, crl_dir, crllint, fail, fill, load, load_ca, load_root,
                       published, read, skip_unless, verify_all)

skip_unless("openssl", "certtool")


def partition_of(serial, parts):
    b = serial.to_bytes((serial.bit_length() + 8) // 8, "big")
    return int.from_bytes(b[:4], "big") % parts if parts > 1 else 0


def lint_catches(der, ca):
    """The lints must fail on broken CRLs: mutate a good one four ways."""
    def expect(bad, what):
        probs = crllint.lint_crl(bytes(bad), ca)
        if not any(what in x for x in probs):
            fail(f"lint missed '{what}': {probs}")

    b = bytearray(der)
    i = b.find(bytes.fromhex("0603551d1c0101ff"))
    b[i + 7] = 0
    expect(b, "issuingDistributionPoint is not critical")
    b = bytearray(der)
    i = b.find(bytes.fromhex("0603551d1504030a01"))
    b[i + 9] = 0
    expect(b, "unspecified(0)")
    b = bytearray(der)
    i = b.find(bytes.fromhex("0603551d1504030a01"))
    b[i + 9] = 8
    expect(b, "removeFromCRL in a full CRL")
    # Swap the first two entries (lengths are kept, so the DER stays well formed).
    _, s0, e0 = crllint.tlv(der, 0)
    _, ts, te = crllint.tlv(der, s0)
    tbs = crllint.children(der, ts, te)
    rc = [c for c in tbs if c[0] == 0x30][-1]
    ents = crllint.children(der, rc[1], rc[2])
    (_, _, e1, o1), (_, _, e2, o2) = ents[0], ents[1]
    b = bytearray(der)
    b[o1:e2] = der[o2:e2] + der[o1:e1]
    expect(b, "entries not sorted")
    check(True, "the lints catch a non-critical IDP, reason unspecified(0), removeFromCRL "
          "in a full CRL and unsorted entries")


with Deployment() as d:
    ca = load_ca(d)
    base_url = None
    with open(d.config) as f:
        for line in f:
            if line.strip().startswith("base_url"):
                base_url = line.split("=", 1)[1].strip()
    check(base_url is not None, "config names crl.base_url")

    r1 = d.sc_json("crl", "publish")
    files = verify_all(d)
    check(len(files) == 2 * 16 + 3, f"first publish wrote {len(files)} CRLs (16 partitions, "
          "full and delta, the root's)")
    full = load(os.path.join(crl_dir(d), "full.crl"))
    check(len(full) == 0, "empty full.crl has no entries (the lint refuses an empty SEQUENCE)")

    fill(d, "--certs", "3000", "--revoked", "300")
    r2 = d.sc_json("crl", "publish", "--pem")
    check(r2["number"] > r1["number"], f"CRL number grows ({r1['number']} -> {r2['number']})")
    check(r2["delta_base"] == r1["number"], "delta base is the previous full number")
    files = verify_all(d)

    full = load(os.path.join(crl_dir(d), "full.crl"))
    all_serials = {e.serial_number for e in full}
    check(len(all_serials) == r2["entries"] and len(all_serials) > 250,
          f"full.crl lists {len(all_serials)} entries")
    biggest = max((os.path.join(crl_dir(d), f"part-{n}.crl") for n in range(16)),
                  key=lambda f: len(load(f)))
    lint_catches(read(biggest), ca)
    union = set()
    for n in range(16):
        path = os.path.join(crl_dir(d), f"part-{n}.crl")
        c = load(path)
        check(crllint.crl_number(c) == r2["number"], f"part-{n}.crl number {r2['number']}")
        ext = crllint.idp(c)
        if ext is None or not ext.critical:
            fail(f"part-{n}.crl has no critical IDP")
        uri = ext.value.full_name[0].value
        check(uri == f"{base_url}/part-{n}.crl" and ext.value.only_contains_user_certs,
              f"part-{n}.crl IDP {uri}, onlyContainsUserCerts")
        fresh = c.extensions.get_extension_for_oid(
            x509.oid.ExtensionOID.FRESHEST_CRL)
        check(not fresh.critical and
              fresh.value[0].full_name[0].value == f"{base_url}/part-{n}-delta.crl",
              f"part-{n}.crl freshestCRL points at its delta")
        serials = {e.serial_number for e in c}
        wrong = [s for s in serials if partition_of(s, 16) != n]
        if wrong:
            fail(f"part-{n}.crl lists {hex(wrong[0])} of another partition")
        if union & serials:
            fail(f"part-{n}.crl shares entries with another partition")
        union |= serials
        dc = load(os.path.join(crl_dir(d), f"part-{n}-delta.crl"))
        dext = dc.extensions.get_extension_for_oid(x509.oid.ExtensionOID.DELTA_CRL_INDICATOR)
        check(dext.critical and dext.value.crl_number == r1["number"] and
              crllint.crl_number(dc) == r2["number"],
              f"part-{n}-delta.crl: critical deltaCRLIndicator {r1['number']}, number {r2['number']}")
        check(crllint.idp(dc).value.full_name[0].value == uri, f"part-{n}-delta.crl has the same IDP")
    check(union == all_serials, "full.crl is exactly the union of the partitions")
    # the root's CRL (an ARL): signed by the root key, same number, the
    # distribution point the issuing CA certificate names
    root = load_root(d)
    arl = load(os.path.join(crl_dir(d), "root.crl"))
    cdp = ca.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    check(arl.is_signature_valid(root.public_key()) and arl.issuer == root.subject and
          crllint.crl_number(arl) == r2["number"] and len(arl) == 0 and
          crllint.idp(arl) is None and
          cdp[0].full_name[0].value == f"{base_url}/root.crl",
          "root.crl: signed by the root, number of the batch, complete (no IDP), at the "
          "issuing CA's CRL distribution point")
    check(arl.next_update - arl.last_update == full.next_update - full.last_update,
          "root.crl has the nextUpdate of the full CRLs")
    check(crllint.idp(full) is None, "full.crl carries no IDP (covers every certificate)")

    # PEM copies carry the same bytes.
    for f in files:
        pem = f[:-4] + ".pem"
        c = x509.load_pem_x509_crl(read(pem))
        from cryptography.hazmat.primitives.serialization import Encoding
        if c.public_bytes(Encoding.DER) != read(f):
            fail(f"{pem} differs from {f}")
    check(True, "PEM copies equal the DER files")

    # Deltas only: full files untouched, deltas against the last full.
    before = {f: read(f) for f in published(d) if "delta" not in f}
    fill(d, "--certs", "3000", "--more", "40")
    r3 = d.sc_json("crl", "publish", "--delta")
    check(not r3["full"] and r3["number"] > r2["number"] and r3["delta_base"] == r2["number"],
          f"--delta publishes number {r3['number']} with base {r2['number']}")
    check(all(read(f) == b for f, b in before.items()), "--delta leaves the full CRLs alone")
    fd = load(os.path.join(crl_dir(d), "full-delta.crl"))
    check(len(fd) == 40 and r3["delta_entries"] == 40,
          f"full-delta.crl lists the 40 new revocations ({len(fd)})")
    check(not ({e.serial_number for e in fd} & all_serials), "delta holds only new changes")
    verify_all(d)
    check(all(x509.load_der_x509_crl(read(f)).is_signature_valid(ca_for(d, f).public_key())
              for f in published(d)), "every CRL's signature verifies (cryptography)")
    check(read(os.path.join(crl_dir(d), "root.crl")) == before[os.path.join(crl_dir(d), "root.crl")],
          "--delta leaves root.crl alone too")

    # crl show
    s = d.sc_json("crl", "show", os.path.join(crl_dir(d), "part-3-delta.crl"))
    check(s["delta"] and s["delta_base"] == str(r2["number"]) and
          s["number"] == str(r3["number"]) and s["idp"].endswith("/part-3.crl"),
          "crl show --json reports number, delta base and IDP")
    t = d.sc("crl", "show", os.path.join(crl_dir(d), "full.pem")).stdout
    check("entries:" in t and "number:       %d" % r2["number"] in t, "crl show reads PEM")
    r = d.sc("crl", "show", d.config, check=False)
    check(r.returncode != 0 and "not a CRL" in r.stderr, "crl show refuses a non-CRL clearly")
