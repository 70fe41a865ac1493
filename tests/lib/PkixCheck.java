// A relying party as Java 17 sees one: PKIX path validation of a whole
// path (end entity, issuing CA, root as trust anchor) with revocation
// checking of every certificate and an explicit certificate policy.
//
//   java PkixCheck ocsp|crl ROOT.pem POLICY-OID LEAF.pem [CA.pem ...]
//
// ocsp: OCSP first for each certificate (its AIA), the CRL distribution
//       point when a certificate names no responder (Java's default fallback);
// crl:  CRL distribution points only (PREFER_CRLS, NO_FALLBACK).
// CRLs are fetched from the distribution points (com.sun.security.enableCRLDP).
//
// Prints one line and exits 0 VALID, 1 REVOKED (with the reason, the
// extension OIDs Java hands to the caller and the invalidity date), 2 any
// other failure (reason and index).
import java.io.FileInputStream;
import java.io.InputStream;
import java.security.cert.CertPath;
import java.security.cert.CertPathValidator;
import java.security.cert.CertPathValidatorException;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.CertificateRevokedException;
import java.security.cert.PKIXParameters;
import java.security.cert.PKIXRevocationChecker;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

public class PkixCheck {
    static Certificate load(CertificateFactory cf, String path) throws Exception {
        try (InputStream in = new FileInputStream(path)) {
            return cf.generateCertificate(in);
        }
    }

    public static void main(String[] a) throws Exception {
        if (a.length < 4) {
            System.err.println("usage: PkixCheck ocsp|crl ROOT.pem POLICY LEAF.pem [CA.pem ...]");
            System.exit(64);
        }
        System.setProperty("com.sun.security.enableCRLDP", "true");
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        X509Certificate root = (X509Certificate) load(cf, a[1]);
        List<Certificate> certs = new ArrayList<>();
        for (int i = 3; i < a.length; i++)
            certs.add(load(cf, a[i]));
        CertPath path = cf.generateCertPath(certs);
        CertPathValidator v = CertPathValidator.getInstance("PKIX");
        PKIXParameters p = new PKIXParameters(Set.of(new TrustAnchor(root, null)));
        p.setInitialPolicies(Set.of(a[2]));
        p.setExplicitPolicyRequired(true);
        PKIXRevocationChecker rc = (PKIXRevocationChecker) v.getRevocationChecker();
        if (a[0].equals("crl"))
            rc.setOptions(EnumSet.of(PKIXRevocationChecker.Option.PREFER_CRLS,
                                     PKIXRevocationChecker.Option.NO_FALLBACK));
        else if (!a[0].equals("ocsp"))
            throw new IllegalArgumentException("mode must be ocsp or crl");
        p.setRevocationEnabled(true);
        p.addCertPathChecker(rc);
        try {
            v.validate(path, p);
            System.out.println("VALID");
            System.exit(0);
        } catch (CertPathValidatorException e) {
            for (Throwable t = e; t != null; t = t.getCause()) {
                if (t instanceof CertificateRevokedException) {
                    CertificateRevokedException r = (CertificateRevokedException) t;
                    System.out.println("REVOKED reason=" + r.getRevocationReason() +
                                       " index=" + e.getIndex() +
                                       " extensions=" + String.join(",", new TreeSet<>(r.getExtensions().keySet())) +
                                       " invalidity=" + (r.getInvalidityDate() == null ? "none"
                                                          : r.getInvalidityDate().toInstant()));
                    System.exit(1);
                }
            }
            System.out.println("INVALID reason=" + e.getReason() + " index=" + e.getIndex() +
                               " message=" + e.getMessage());
            System.exit(2);
        }
    }
}
