"""CRL checks shared by the crl tests: the lints pkilint (lint_crl) and
zlint's CRL lints make, implemented here on the DER itself (our own small
DER reader) plus Python `cryptography` for parsing and the signature.

    problems = lint_crl(der, issuer_cert)   # [] when clean
"""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

OID_AKI = "2.5.29.35"
OID_CRL_NUMBER = "2.5.29.20"
OID_DELTA = "2.5.29.27"
OID_IDP = "2.5.29.28"
OID_FRESHEST = "2.5.29.46"
OID_REASON = "2.5.29.21"
OID_INVALIDITY = "2.5.29.24"
OID_ECDSA_PREFIX = "1.2.840.10045.4."
OID_RSA_PREFIX = "1.2.840.113549.1.1."
# Extensions a relying party must understand to use our CRLs; any other
# critical extension would make every client reject the CRL.
KNOWN_CRITICAL = {OID_DELTA, OID_IDP}
KNOWN_ENTRY = {OID_REASON, OID_INVALIDITY}
Y2050 = datetime.datetime(2050, 1, 1, tzinfo=datetime.timezone.utc)


class DerError(Exception):
    pass


def tlv(buf, off):
    """(tag, content_start, content_end) of the TLV at off; strict DER lengths."""
    if off + 2 > len(buf):
        raise DerError("truncated header")
    tag = buf[off]
    b = buf[off + 1]
    if b < 0x80:
        n, hl = b, 2
    else:
        k = b & 0x7F
        if k == 0 or k > 4 or off + 2 + k > len(buf):
            raise DerError("bad length")
        n = int.from_bytes(buf[off + 2:off + 2 + k], "big")
        if n < 0x80 or (k > 1 and buf[off + 2] == 0):
            raise DerError("non-minimal length")
        hl = 2 + k
    if off + hl + n > len(buf):
        raise DerError("content overruns")
    return tag, off + hl, off + hl + n


def children(buf, start, end):
    out, off = [], start
    while off < end:
        t, s, e = tlv(buf, off)
        out.append((t, s, e, off))
        off = e
    if off != end:
        raise DerError("trailing bytes")
    return out


def oid_str(b):
    vals, v = [], 0
    for c in b:
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            vals.append(v)
            v = 0
    first = min(vals[0] // 40, 2)
    return ".".join(str(x) for x in [first, vals[0] - 40 * first] + vals[1:])


def parse_exts(buf, s, e):
    """[(oid, critical, value_start, value_end, critical_encoded_false)]"""
    out = []
    for t, es, ee, _ in children(buf, s, e):
        if t != 0x30:
            raise DerError("extension not a SEQUENCE")
        parts = children(buf, es, ee)
        oid = oid_str(buf[parts[0][1]:parts[0][2]])
        crit, crit_false = False, False
        if len(parts) == 3:
            if parts[1][0] != 0x01:
                raise DerError("critical not BOOLEAN")
            crit = buf[parts[1][1]] != 0
            crit_false = not crit
        out.append((oid, crit, parts[-1][1], parts[-1][2], crit_false))
    return out


def parse_time(buf, t, s, e):
    txt = bytes(buf[s:e]).decode()
    if t == 0x17:
        if len(txt) != 13 or not txt.endswith("Z"):
            raise DerError(f"UTCTime not YYMMDDHHMMSSZ: {txt}")
        yy = int(txt[:2])
        year = 1900 + yy if yy >= 50 else 2000 + yy
        rest = txt[2:]
    elif t == 0x18:
        if len(txt) != 15 or not txt.endswith("Z"):
            raise DerError(f"GeneralizedTime not YYYYMMDDHHMMSSZ: {txt}")
        year = int(txt[:4])
        rest = txt[4:]
    else:
        raise DerError("not a time")
    return datetime.datetime(year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]),
                             int(rest[6:8]), int(rest[8:10]), tzinfo=datetime.timezone.utc)


def check_time_rule(problems, what, buf, t, s, e):
    try:
        when = parse_time(buf, t, s, e)
    except DerError as ex:
        problems.append(f"{what}: {ex}")
        return None
    if when < Y2050 and t != 0x17:
        problems.append(f"{what}: GeneralizedTime before 2050 (RFC 5280 4.1.2.5)")
    if when >= Y2050 and t != 0x18:
        problems.append(f"{what}: UTCTime at or after 2050")
    return when


def check_algid(p, buf, s, e):
    """RFC 5758 3.2: ECDSA AlgorithmIdentifiers have no parameters; RFC 4055:
    PKCS#1 v1.5 ones have NULL."""
    parts = children(buf, s, e)
    oid = oid_str(buf[parts[0][1]:parts[0][2]])
    if oid.startswith(OID_ECDSA_PREFIX) and len(parts) != 1:
        p.append(f"ECDSA signature algorithm {oid} carries parameters")
    if oid.startswith(OID_RSA_PREFIX) and oid != "1.2.840.113549.1.1.10" and (
            len(parts) != 2 or parts[1][0] != 0x05 or parts[1][1] != parts[1][2]):
        p.append(f"RSA signature algorithm {oid} without NULL parameters")


def check_idp(p, buf, s, e):
    """IssuingDistributionPoint: a fullName URI, at most one onlyContains*
    flag, no onlySomeReasons/indirectCRL (we never issue those), no field
    encoded with its DEFAULT value."""
    t, vs, ve = tlv(buf, s)
    fields = children(buf, vs, ve)
    if not fields:
        p.append("issuingDistributionPoint is empty")
        return
    tags = [f[0] for f in fields]
    if tags[0] != 0xA0:
        p.append("issuingDistributionPoint has no distributionPoint")
    else:
        names = children(buf, fields[0][1], fields[0][2])
        if not names or names[0][0] != 0xA0 or not any(
                g[0] == 0x86 for g in children(buf, names[0][1], names[0][2])):
            p.append("issuingDistributionPoint distributionPoint is not a fullName URI")
    flags = [f for f in fields if f[0] in (0x81, 0x82, 0x84)]
    for f in flags:
        if bytes(buf[f[1]:f[2]]) != b"\xff":
            p.append("issuingDistributionPoint flag encoded FALSE (DER DEFAULT)")
    if len(flags) > 1:
        p.append("issuingDistributionPoint sets more than one onlyContains* flag")
    if 0x83 in tags or 0x84 in tags:
        p.append("issuingDistributionPoint: onlySomeReasons/indirectCRL not expected")
    if [t & 0x1F for t in tags] != sorted(t & 0x1F for t in tags):
        p.append("issuingDistributionPoint fields out of order")


def lint_crl(der, issuer_cert=None):
    """Return a list of problems (empty when the CRL passes every lint)."""
    p = []
    buf = memoryview(der)
    try:
        t, s, e = tlv(buf, 0)
        if t != 0x30 or e != len(buf):
            return ["CertificateList is not one SEQUENCE"]
        top = children(buf, s, e)
        if len(top) != 3:
            return ["CertificateList must have 3 parts"]
        tbs, alg_outer, sigval = top
        if sigval[0] != 0x03:
            p.append("signatureValue is not a BIT STRING")
        parts = children(buf, tbs[1], tbs[2])
        i = 0
        if parts[0][0] != 0x02 or bytes(buf[parts[0][1]:parts[0][2]]) != b"\x01":
            p.append("version is not v2 (INTEGER 1)")
        else:
            i = 1
        alg_inner = parts[i]
        if bytes(buf[alg_inner[3]:alg_inner[2]]) != bytes(buf[alg_outer[3]:alg_outer[2]]):
            p.append("inner signature algorithm differs from the outer one")
        check_algid(p, buf, alg_inner[1], alg_inner[2])
        issuer = parts[i + 1]
        if issuer[0] != 0x30 or issuer[1] == issuer[2]:
            p.append("issuer is not a non-empty Name (RFC 5280 5.1.2.3)")
        i += 2
        this_u = check_time_rule(p, "thisUpdate", buf, *parts[i][:3])
        i += 1
        next_u = None
        if i < len(parts) and parts[i][0] in (0x17, 0x18):
            next_u = check_time_rule(p, "nextUpdate", buf, *parts[i][:3])
            i += 1
        else:
            p.append("nextUpdate missing (RFC 5280 5.1.2.5 requires it)")
        if this_u and next_u and not this_u < next_u:
            p.append("thisUpdate is not before nextUpdate")
        entries = []
        if i < len(parts) and parts[i][0] == 0x30:
            if parts[i][1] == parts[i][2]:
                p.append("empty revokedCertificates SEQUENCE (must be omitted)")
            entries = children(buf, parts[i][1], parts[i][2])
            i += 1
        exts = []
        if i < len(parts) and parts[i][0] == 0xA0:
            seq = children(buf, parts[i][1], parts[i][2])
            if len(seq) != 1 or seq[0][0] != 0x30:
                p.append("crlExtensions is not [0] { SEQUENCE }")
            else:
                if seq[0][1] == seq[0][2]:
                    p.append("empty crlExtensions")
                exts = parse_exts(buf, seq[0][1], seq[0][2])
            i += 1
        if i != len(parts):
            p.append("unexpected fields in TBSCertList")
        seen = set()
        byoid = {}
        for oid, crit, vs, ve, cf in exts:
            if oid in seen:
                p.append(f"extension {oid} repeated")
            seen.add(oid)
            byoid[oid] = (crit, vs, ve)
            if cf:
                p.append(f"extension {oid}: critical FALSE encoded (DER DEFAULT)")
            if crit and oid not in KNOWN_CRITICAL:
                p.append(f"unexpected critical extension {oid}")
        if OID_AKI not in byoid:
            p.append("authorityKeyIdentifier missing")
        elif byoid[OID_AKI][0]:
            p.append("authorityKeyIdentifier is critical")
        if OID_CRL_NUMBER not in byoid:
            p.append("cRLNumber missing")
        else:
            crit, vs, ve = byoid[OID_CRL_NUMBER]
            if crit:
                p.append("cRLNumber is critical")
            nt, ns, ne = tlv(buf, vs)
            if nt != 0x02 or ne - ns > 20 or buf[ns] & 0x80:
                p.append("cRLNumber not a non-negative INTEGER of <= 20 octets")
        if OID_DELTA in byoid and not byoid[OID_DELTA][0]:
            p.append("deltaCRLIndicator is not critical")
        if OID_IDP in byoid:
            if not byoid[OID_IDP][0]:
                p.append("issuingDistributionPoint is not critical")
            check_idp(p, buf, byoid[OID_IDP][1], byoid[OID_IDP][2])
        if OID_DELTA in byoid and OID_CRL_NUMBER in byoid:
            bt, bs, be = tlv(buf, byoid[OID_DELTA][1])
            nt, ns, ne = tlv(buf, byoid[OID_CRL_NUMBER][1])
            base = int.from_bytes(buf[bs:be], "big")
            if bt != 0x02 or base > int.from_bytes(buf[ns:ne], "big"):
                p.append("deltaCRLIndicator base above the delta's own cRLNumber")
        if OID_FRESHEST in byoid and byoid[OID_FRESHEST][0]:
            p.append("freshestCRL is critical")
        if OID_FRESHEST in byoid and OID_DELTA in byoid:
            p.append("freshestCRL in a delta CRL")
        prev = None
        serials = set()
        for et, es, ee, _ in entries:
            ep = children(buf, es, ee)
            if ep[0][0] != 0x02:
                p.append("entry serial is not an INTEGER")
                continue
            sb = bytes(buf[ep[0][1]:ep[0][2]])
            if not sb or sb[0] & 0x80:
                p.append(f"serial {sb.hex()} is not positive")
            if len(sb) > 1 and sb[0] == 0 and not sb[1] & 0x80:
                p.append(f"serial {sb.hex()} not minimally encoded")
            if len(sb) > 20 and not (len(sb) == 21 and sb[0] == 0):
                p.append(f"serial {sb.hex()} longer than 20 octets")
            val = int.from_bytes(sb, "big", signed=True)
            if val == 0:
                p.append("serial 0")
            if val in serials:
                p.append(f"serial {sb.hex()} listed twice")
            if prev is not None and val <= prev:
                p.append(f"entries not sorted by serial at {sb.hex()}")
            prev = val
            serials.add(val)
            rd = check_time_rule(p, f"revocationDate of {sb.hex()}", buf, *ep[1][:3])
            if rd and this_u and rd > this_u:
                p.append(f"revocationDate of {sb.hex()} after thisUpdate")
            if len(ep) > 2:
                if ep[2][1] == ep[2][2]:
                    p.append(f"empty crlEntryExtensions on {sb.hex()}")
                eseen = set()
                for oid, crit, vs, ve, cf in parse_exts(buf, ep[2][1], ep[2][2]):
                    if oid in eseen:
                        p.append(f"entry extension {oid} repeated on {sb.hex()}")
                    eseen.add(oid)
                    if oid not in KNOWN_ENTRY:
                        p.append(f"unexpected entry extension {oid} on {sb.hex()} "
                                 "(certificateIssuer needs an indirect CRL)")
                    if oid == OID_REASON:
                        if crit:
                            p.append(f"reasonCode critical on {sb.hex()}")
                        rt, rs, re_ = tlv(buf, vs)
                        if rt != 0x0A:
                            p.append("reasonCode not ENUMERATED")
                        elif bytes(buf[rs:re_]) == b"\x00":
                            p.append(f"reasonCode unspecified(0) encoded on {sb.hex()}")
                        elif buf[rs] == 8 and OID_DELTA not in byoid:
                            p.append("removeFromCRL in a full CRL")
                        elif buf[rs] == 7 or buf[rs] > 10:
                            p.append(f"reasonCode {buf[rs]} is not a CRLReason")
                    elif oid == OID_INVALIDITY:
                        if crit:
                            p.append("invalidityDate critical")
                        it, _, _ = tlv(buf, vs)
                        if it != 0x18:
                            p.append("invalidityDate not GeneralizedTime")
                    if cf:
                        p.append(f"entry extension {oid}: critical FALSE encoded")
    except (DerError, IndexError, ValueError) as ex:
        p.append(f"DER: {ex}")
        return p
    # The library's view: parses, and the signature is the issuer's.
    try:
        crl = x509.load_der_x509_crl(bytes(der))
    except ValueError as ex:
        p.append(f"cryptography cannot parse: {ex}")
        return p
    if issuer_cert is not None:
        if not crl.is_signature_valid(issuer_cert.public_key()):
            p.append("signature does not verify with the issuing CA key")
        if crl.issuer != issuer_cert.subject:
            p.append("issuer differs from the CA subject")
        try:
            aki = crl.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
            ski = issuer_cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
            if aki.value.key_identifier != ski.value.digest:
                p.append("AKI keyIdentifier differs from the CA's SKI")
        except x509.ExtensionNotFound:
            p.append("AKI or CA SKI missing")
    return p


def crl_number(crl):
    return crl.extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER).value.crl_number


def delta_base(crl):
    try:
        return crl.extensions.get_extension_for_oid(ExtensionOID.DELTA_CRL_INDICATOR).value.crl_number
    except x509.ExtensionNotFound:
        return None


def idp(crl):
    try:
        return crl.extensions.get_extension_for_oid(ExtensionOID.ISSUING_DISTRIBUTION_POINT)
    except x509.ExtensionNotFound:
        return None


def entry_reason(entry):
    try:
        return entry.extensions.get_extension_for_oid(CRLEntryExtensionOID.CRL_REASON).value.reason
    except x509.ExtensionNotFound:
        return None
