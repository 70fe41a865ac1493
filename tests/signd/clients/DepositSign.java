// A gateway in Java 17: the standard SunPKCS11 provider and the standard
// java.security API only (no JDK internals, no --add-exports).  The approval
// was deposited ahead (smartcert approve), so Signature.sign() is all it takes.
//
// usage: java DepositSign.java PKCS11_CONFIG PIN_FILE CERT_DER ALGORITHM IN OUT
//   ALGORITHM: SHA256withECDSA (IN = the document), NONEwithECDSA (IN = the
//   SHA-256 digest), SHA256withRSA (IN = the document)
// Exit 0 and OUT written: signed (DER for ECDSA); exit 3: refused (the
// provider's message on stderr).
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.Security;
import java.security.Signature;
import java.security.cert.Certificate;
import java.util.Arrays;
import java.util.Collections;

public class DepositSign {
    public static void main(String[] a) throws Exception {
        Provider p = Security.getProvider("SunPKCS11").configure(a[0]);
        Security.addProvider(p);
        char[] pin = Files.readString(Path.of(a[1])).strip().toCharArray();
        byte[] want = Files.readAllBytes(Path.of(a[2]));
        KeyStore ks = KeyStore.getInstance("PKCS11", p);
        ks.load(null, pin);                                 // C_Login(CKU_USER, gateway credential)
        Arrays.fill(pin, '\0');
        PrivateKey key = null;
        for (String alias : Collections.list(ks.aliases())) {
            Certificate c = ks.getCertificate(alias);
            if (c != null && Arrays.equals(c.getEncoded(), want) && ks.isKeyEntry(alias))
                key = (PrivateKey) ks.getKey(alias, null);
        }
        if (key == null) {
            System.err.println("no private key with that certificate");
            System.exit(2);
        }
        Signature s = Signature.getInstance(a[3], p);
        s.initSign(key);                                    // C_SignInit
        s.update(Files.readAllBytes(Path.of(a[4])));
        byte[] sig;
        try {
            sig = s.sign();                                 // C_Sign: consumes the deposit
        } catch (Exception e) {
            System.err.println("refused: " + e + (e.getCause() != null ? " / " + e.getCause() : ""));
            System.exit(3);
            return;
        }
        Files.write(Path.of(a[5]), sig);
    }
}
