#!/usr/bin/env python3
"""Certificates issued by `smartcert init` / `ca enrol` / `ca issue`: they
verify with the OpenSSL CLI, parse with GnuTLS certtool and Python
cryptography, and carry the profile of docs/certificate-profile.md."""
import datetime
import os
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check, skip_unless  # noqa: E402

skip_unless("openssl", "certtool")
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    print("SKIP: python3-cryptography missing", file=sys.stderr)
    sys.exit(77)

POLICY_ADULT = "2.999.4109.1.1"
POLICY_MINOR = "2.999.4109.1.2"


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def not_after(cert):
    return cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


with Deployment("--ocsp-url", "http://127.0.0.1:9/ocsp", "--crl-url", "http://127.0.0.1:9/crl",
                "--partitions", "8") as d:
    chain = d.info["chain"]
    # NSS has no SO PIN: the database password is the backend PIN
    nss = os.environ.get("SC_TEST_BACKEND") == "nss"
    so = () if nss else ("so_pin_file",)
    if nss:
        check(d.info["so_pin_file"] is None and d.info["backend"] == "nss",
              "an NSS deployment has no SO PIN file")
    for f in ("root_ca", "issuing_ca", "ocsp_cert", "chain", "authz_pub", "authz_key",
              "backend_pin_file", "gateway_pin_file", *so):
        check(os.path.exists(d.info[f]), f"init wrote {f}")
    for f in ("backend_pin_file", "gateway_pin_file", *so, "authz_key"):
        check(os.stat(d.info[f]).st_mode & 0o077 == 0, f"{f} is owner-only")
    conf = open(d.config).read()
    check(d.gateway_pin.startswith("default:"), "the first gateway's credential names it")
    check(d.gateway_pin not in conf, "gateway credential is not in the config")
    gws = d.sc_json("gateway", "list")
    check([g["name"] for g in gws["gateways"]] == ["default"], "the first gateway is registered")
    for sub in ("secrets", "store", "hsm", "hsm/tokens", "gateway", "authz-demo"):
        check(os.stat(os.path.join(d.dir, sub)).st_mode & 0o077 == 0, f"{sub}/ is owner-only")
    if nss:
        db = os.path.join(d.dir, "hsm", "nssdb")
        check(os.path.exists(os.path.join(db, "key4.db")) and os.stat(db).st_mode & 0o077 == 0,
              "own NSS database, owner-only")
        check("backend = nss" in conf and "fips = yes" in conf, "the config names the nss backend")
        # The responder's own database: the OCSP signer's key and nothing
        # else, opened by its own PIN and not by the backend's (NSS's certutil
        # as the judge).
        ocspdb = os.path.join(d.dir, "hsm", "nssdb-ocsp")

        def keys(db, pin):
            r = subprocess.run(["certutil", "-K", "-d", "sql:" + db, "-f", pin],
                               capture_output=True, text=True)
            return r.returncode, [ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith("<")]
        pins = os.path.join(d.dir, "secrets")
        rc, ks = keys(ocspdb, os.path.join(pins, "ocsp.pin"))
        check(rc == 0 and ks == ["smartcert-ocsp-signer"], f"the OCSP database holds the signer key alone {ks}")
        rc, ks = keys(ocspdb, os.path.join(pins, "backend.pin"))
        check(rc != 0, "the backend PIN does not open the OCSP database")
        rc, ks = keys(db, os.path.join(pins, "backend.pin"))
        check(rc == 0 and "smartcert-issuing-ca" in ks and "smartcert-ocsp-signer" not in ks,
              f"the backend database holds the CA keys, not the OCSP signer's {ks}")
    else:
        check(os.path.exists(os.path.join(d.dir, "hsm", "softhsm2.conf")), "own softhsm2.conf")

    r = subprocess.run(["openssl", "verify", "-x509_strict", "-policy_check", "-CAfile", chain,
                        d.info["ocsp_cert"]],
                       capture_output=True, text=True)
    check(r.returncode == 0, "OCSP signer certificate verifies against the chain")

    root = x509.load_pem_x509_certificate(open(d.info["root_ca"], "rb").read())
    issuing = x509.load_pem_x509_certificate(open(d.info["issuing_ca"], "rb").read())
    ocsp = x509.load_pem_x509_certificate(open(d.info["ocsp_cert"], "rb").read())
    bc = ext(root, x509.BasicConstraints)
    check(bc.critical and bc.value.ca, "root: basicConstraints CA:TRUE critical")
    ku = ext(root, x509.KeyUsage).value
    check(ku.key_cert_sign and ku.crl_sign and not ku.digital_signature, "root: keyCertSign|cRLSign")
    bc = ext(issuing, x509.BasicConstraints)
    check(bc.critical and bc.value.ca and bc.value.path_length == 0, "issuing CA: pathlen 0")
    pols = [p.policy_identifier.dotted_string
            for p in ext(issuing, x509.CertificatePolicies).value]
    check(pols == [POLICY_ADULT, POLICY_MINOR, "2.999.4109.2.1", "2.999.4109.2.2",
                   "2.999.4109.2.3"],
          f"issuing CA: certificatePolicies name every policy it issues under {pols}")
    cdp = ext(issuing, x509.CRLDistributionPoints)
    check(not cdp.critical and cdp.value[0].full_name[0].value == "http://127.0.0.1:9/crl/root.crl",
          "issuing CA: CRL distribution point = the root's CRL")
    eku = ext(ocsp, x509.ExtendedKeyUsage).value
    check(ExtendedKeyUsageOID.OCSP_SIGNING in list(eku), "OCSP signer: EKU OCSPSigning")
    check(any(e.oid.dotted_string == "1.3.6.1.5.5.7.48.1.5" for e in ocsp.extensions),
          "OCSP signer: id-pkix-ocsp-nocheck")
    check(ocsp.issuer == issuing.subject, "OCSP signer issued by the issuing CA")

    # adult, P-256
    env = dict(d.env, IDN="Z683921(7)")
    adult = d.sc("ca", "enrol", "--user", "alice", "--name", "CHAN Tai Man",
                 "--id-number-source", "env:IDN", "--json", env=env)
    import json
    a = json.loads(adult.stdout)
    check(set(a) >= {"user", "key_id", "serial", "not_after", "partition"}, "enrol --json keys")
    pem = os.path.join(d.tmp, "alice.pem")
    d.sc("ca", "export", "--serial", a["serial"], "--out", pem)
    r = subprocess.run(["openssl", "verify", "-x509_strict", "-policy_check", "-CAfile", chain, pem],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"adult certificate verifies: {r.stdout.strip()} {r.stderr.strip()}")
    r = subprocess.run(["certtool", "-i", "--infile", pem], capture_output=True, text=True)
    check(r.returncode == 0 and "Version: 3" in r.stdout, "certtool -i parses it")
    c = x509.load_pem_x509_certificate(open(pem, "rb").read())
    check(c.version == x509.Version.v3, "v3")
    check(format(c.serial_number, "x").zfill(len(a["serial"])) == a["serial"], "serial matches")
    check(c.serial_number.bit_length() >= 64, "serial has >= 64 bits")
    check(c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CHAN Tai Man",
          "subject CN is the name")
    sn = c.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
    check(len(sn) == 64 and "6839217" not in sn, "subject serialNumber is the keyed hash, not the number")
    ku = ext(c, x509.KeyUsage)
    check(ku.critical and ku.value.digital_signature and ku.value.content_commitment
          and not ku.value.key_cert_sign, "keyUsage critical digitalSignature+nonRepudiation")
    bc = ext(c, x509.BasicConstraints)
    check(not bc.value.ca, "basicConstraints CA:FALSE")
    pol = [p.policy_identifier.dotted_string for p in ext(c, x509.CertificatePolicies).value]
    check(pol == [POLICY_ADULT], f"adult policy {pol}")
    aia = ext(c, x509.AuthorityInformationAccess).value
    urls = {(ad.access_method.dotted_string, ad.access_location.value) for ad in aia}
    check(("1.3.6.1.5.5.7.48.1", "http://127.0.0.1:9/ocsp") in urls, "AIA OCSP = ca.ocsp_url")
    check(any(m == "1.3.6.1.5.5.7.48.2" for m, _ in urls), "AIA caIssuers")
    part = a["partition"]
    check(0 <= part < 8, "partition within --partitions 8")
    cdp = ext(c, x509.CRLDistributionPoints).value
    check(cdp[0].full_name[0].value == f"http://127.0.0.1:9/crl/part-{part}.crl", "CDP part-N.crl")
    fr = ext(c, x509.FreshestCRL).value
    check(fr[0].full_name[0].value == f"http://127.0.0.1:9/crl/part-{part}-delta.crl",
          "freshestCRL part-N-delta.crl")
    ski = ext(c, x509.SubjectKeyIdentifier).value.digest
    aki = ext(c, x509.AuthorityKeyIdentifier).value.key_identifier
    check(aki == ext(issuing, x509.SubjectKeyIdentifier).value.digest and len(ski) > 0,
          "AKI = issuing CA SKI; SKI present")
    check(isinstance(c.public_key(), ec.EllipticCurvePublicKey)
          and c.public_key().curve.name == "secp256r1", "P-256 key by default")
    issuing.public_key().verify(c.signature, c.tbs_certificate_bytes,
                                ec.ECDSA(c.signature_hash_algorithm))
    check(True, "signature verifies with the issuing CA key (cryptography)")

    # minor, RSA-2048: notAfter at most the 18th birthday
    dob = (datetime.date.today() - datetime.timedelta(days=365 * 16)).isoformat()
    env = dict(d.env, IDN2="Y1234560")
    m = json.loads(d.sc("ca", "enrol", "--user", "minnie", "--name", "LEE Siu Ming",
                        "--id-number-source", "env:IDN2", "--dob", dob, "--profile", "minor",
                        "--key-type", "rsa2048", "--json", env=env).stdout)
    pem = os.path.join(d.tmp, "minnie.pem")
    d.sc("ca", "export", "--serial", m["serial"], "--out", pem)
    r = subprocess.run(["openssl", "verify", "-x509_strict", "-policy_check", "-CAfile", chain, pem],
                       capture_output=True, text=True)
    check(r.returncode == 0, "minor certificate verifies")
    c = x509.load_pem_x509_certificate(open(pem, "rb").read())
    pol = [p.policy_identifier.dotted_string for p in ext(c, x509.CertificatePolicies).value]
    check(pol == [POLICY_MINOR], "minor policy")
    y, mo, dd = (int(x) for x in dob.split("-"))
    try:
        eighteen = datetime.datetime(y + 18, mo, dd, tzinfo=datetime.timezone.utc)
    except ValueError:
        eighteen = datetime.datetime(y + 18, 3, 1, tzinfo=datetime.timezone.utc)
    check(not_after(c) == eighteen, f"minor notAfter {not_after(c)} is the 18th birthday {eighteen}")
    check(c.public_key().key_size == 2048, "RSA-2048 key")

    r = d.sc("ca", "enrol", "--user", "kid2", "--name", "X", "--id-number-source", "env:IDN2",
             "--profile", "minor", check=False, env=env)
    check(r.returncode == 2 and "dob" in r.stderr, "minor without --dob refused")
    r = d.sc("ca", "enrol", "--user", "kid3", "--name", "X", "--id-number-source", "env:IDN2",
             "--profile", "senior", check=False, env=env)
    check(r.returncode == 2 and "unknown profile 'senior'" in r.stderr
          and r.stderr.count("\n") == 1, f"unknown enrolment profile: one message {r.stderr.strip()}")

    # export variants
    der = os.path.join(d.tmp, "a.der")
    d.sc("ca", "export", "--serial", a["serial"], "--der", "--out", der)
    x509.load_der_x509_certificate(open(der, "rb").read())
    check(True, "export --der gives DER")
    r = d.sc("ca", "export", "--serial", a["serial"], "--chain")
    check(r.stdout.count("BEGIN CERTIFICATE") == 3, "export --chain gives leaf + issuing + root")
    ej = d.sc_json("ca", "export", "--serial", a["serial"], "--chain")
    check(ej["serial"] == a["serial"] and len(ej["pem"]) == 3 and "".join(ej["pem"]) == r.stdout,
          "export --json gives the same PEM chain")
    check(x509.load_pem_x509_certificate(ej["pem"][1].encode()).subject == issuing.subject,
          "export --json: issuing CA second")

    # CSR issuance
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw1.example")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("gw1.example")]), False)
           .sign(key, hashes.SHA256()))
    csr_pem = csr.public_bytes(serialization.Encoding.PEM)
    csrf = os.path.join(d.tmp, "gw.csr")
    open(csrf, "wb").write(csr_pem)
    out = os.path.join(d.tmp, "gw.pem")
    d.sc("ca", "issue", "--csr", csrf, "--profile", "tls-server", "--out", out)
    r = subprocess.run(["openssl", "verify", "-x509_strict", "-policy_check", "-CAfile", chain,
                        "-purpose", "sslserver", out],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"tls-server certificate verifies for sslserver {r.stderr}")
    c = x509.load_pem_x509_certificate(open(out, "rb").read())
    check(ext(c, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
          == ["gw1.example"], "SAN carried over from the CSR")
    check(ExtendedKeyUsageOID.SERVER_AUTH in list(ext(c, x509.ExtendedKeyUsage).value), "EKU serverAuth")
    d.sc("ca", "issue", "--csr", csrf, "--profile", "tls-client", "--out", out)
    c = x509.load_pem_x509_certificate(open(out, "rb").read())
    check(ExtendedKeyUsageOID.CLIENT_AUTH in list(ext(c, x509.ExtendedKeyUsage).value), "tls-client: clientAuth")
    r = subprocess.run(["openssl", "verify", "-x509_strict", "-policy_check", "-CAfile", chain,
                        "-purpose", "sslclient", out], capture_output=True, text=True)
    check(r.returncode == 0, f"tls-client: openssl verify -x509_strict -policy_check {r.stderr}")

    # operator: the e-mail address goes into the SAN (rfc822Name), never
    # the subject (pkilint pkix.subject_email_address_not_in_san; RFC 5280
    # §4.1.2.6), whether the request put it in its subject or its SAN
    for how, subject_extra, san in (
            ("subject emailAddress", [x509.NameAttribute(NameOID.EMAIL_ADDRESS, "op1@example.org")],
             None),
            ("SAN rfc822Name", [], [x509.RFC822Name("op1@example.org")]),
            ("both", [x509.NameAttribute(NameOID.EMAIL_ADDRESS, "op1@example.org")],
             [x509.RFC822Name("op1@example.org")])):
        b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "Operator One")] + subject_extra))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), False)
        opf = os.path.join(d.tmp, "op.csr")
        open(opf, "wb").write(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        opout = os.path.join(d.tmp, "op.pem")
        d.sc("ca", "issue", "--csr", opf, "--profile", "operator", "--out", opout)
        c = x509.load_pem_x509_certificate(open(opout, "rb").read())
        emails = ext(c, x509.SubjectAlternativeName).value.get_values_for_type(x509.RFC822Name)
        check(not c.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS) and
              emails == ["op1@example.org"] and
              c.subject.rfc4514_string() == "CN=Operator One" and
              not ext(c, x509.SubjectAlternativeName).critical,
              f"operator ({how}): e-mail once in the SAN as rfc822Name, subject CN only")
        r = subprocess.run(["openssl", "verify", "-x509_strict", "-policy_check", "-CAfile", chain,
                            opout], capture_output=True, text=True)
        check(r.returncode == 0, f"operator ({how}): openssl verify -x509_strict -policy_check "
              f"{r.stdout.strip()} {r.stderr.strip()}")
    try:
        from cryptography.x509 import verification
        with open(d.info["root_ca"], "rb") as f:
            root = x509.load_pem_x509_certificate(f.read())
        with open(d.info["issuing_ca"], "rb") as f:
            issuing_ca = x509.load_pem_x509_certificate(f.read())
        verifier = (verification.PolicyBuilder().store(verification.Store([root]))
                    .build_client_verifier())
        res = verifier.verify(c, [issuing_ca])
        check(res.subjects is not None and x509.RFC822Name("op1@example.org") in res.subjects,
              "operator: python-cryptography's client verifier accepts it and sees the e-mail")
    except ImportError:
        print("# python-cryptography has no x509.verification: client verifier not run")
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Operator Two")]))
    open(opf, "wb").write(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    r = d.sc("ca", "issue", "--csr", opf, "--profile", "operator", check=False)
    check(r.returncode == 2 and "e-mail address" in r.stderr,
          f"operator without an e-mail address refused: {r.stderr.strip()}")

    before = d.sc("ca", "list", "--json").stdout
    r = d.sc("ca", "issue", "--csr", csrf, "--profile", "nosuch", check=False)
    check(r.returncode == 2 and "unknown profile" in r.stderr and r.stderr.count("\n") == 1,
          "unknown profile refused with one message")
    der_csr = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der_csr[-5] ^= 0x01          # inside the signature
    bad = os.path.join(d.tmp, "bad.csr")
    open(bad, "wb").write(bytes(der_csr))
    r = d.sc("ca", "issue", "--csr", bad, "--profile", "tls-client", check=False)
    check(r.returncode == 2 and "signature" in r.stderr and r.stderr.count("\n") == 1,
          f"CSR with a bad signature refused with one message: {r.stderr.strip()}")
    check(d.sc("ca", "list", "--json").stdout == before, "store unchanged by refused issues")
print("PASS")
