#!/usr/bin/python3
"""Revocation beats signing: gateway threads sign with one key while an
officer revokes it (keyCompromise) from another process.  The service checks
the key's state again inside the transaction that records each signature,
so in the audit chain:

* no `sign ok` record for the key follows its revoke record;
* every signature a gateway received has its `sign ok` record, and there
  are no more records than signatures."""
import hashlib
import os
import sys
import threading
import time

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, Gateway, check, mint_token  # noqa: E402

try:
    import PyKCS11 as P
except ImportError as e:
    print(f"SKIP: {e} (install python3-pykcs11)", file=sys.stderr)
    sys.exit(77)

ECDSA = P.Mechanism(P.CKM_ECDSA, None)
THREADS = 4
PER_THREAD = 24


def main():
    with Deployment(prefix="p11-race-") as d:
        enrolled = d.enrol("victim", "p256")
        kid = enrolled.get("key_id") or enrolled["keys"][0]["key_id"]
        gw = Gateway(d)
        key = gw.key("victim")[0]
        # Tokens minted ahead: the race is between signing and revoking.
        work = []
        for t in range(THREADS):
            items = []
            for i in range(PER_THREAD):
                dg = hashlib.sha256(f"doc {t}/{i}".encode()).digest()
                items.append((dg, mint_token(d, "victim", kid, [("sha256", dg)])))
            work.append(items)
        got = [[] for _ in range(THREADS)]
        started = threading.Barrier(THREADS + 1)

        def signer(t):
            s = gw.new_session()
            started.wait()
            for dg, tok in work[t]:
                try:
                    sig = gw.sign(key, ECDSA, dg, tok, session=s)
                    got[t].append(dg.hex())
                except P.PyKCS11Error:
                    s.closeSession()
                    s = gw.new_session()
            s.closeSession()

        threads = [threading.Thread(target=signer, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        started.wait()
        time.sleep(0.05)            # some signatures before the revocation
        d.sc("ca", "revoke", "--user", "victim", "--reason", "keyCompromise")
        for th in threads:
            th.join(timeout=300)
        returned = {h for g in got for h in g}
        total = THREADS * PER_THREAD
        check(0 < len(returned) < total,
              f"the revocation landed mid-run ({len(returned)} of {total} signatures returned)")

        recs = d.audit("victim")
        revoke_seq = [r["seq"] for r in recs if r.get("kind") == "revoke"]
        check(len(revoke_seq) == 1, "one revoke record")
        oks = [r for r in recs if r.get("kind") == "sign" and r.get("outcome") == "ok"]
        after = [r for r in oks if r["seq"] > revoke_seq[0]]
        check(not after, f"no sign ok record follows the revoke record ({len(after)} did)")
        check({r.get("digest") for r in oks} == returned and len(oks) == len(returned),
              f"every returned signature has its record, and only those ({len(oks)} records, "
              f"{len(returned)} signatures)")
        withheld = [r for r in recs if r.get("kind") == "sign-refused" and
                    "withheld" in (r.get("detail") or "")]
        print(f"# {len(returned)} signed, {len(withheld)} withheld in the commit, "
              f"{total - len(returned) - len(withheld)} refused earlier")
        gw.close()


if __name__ == "__main__":
    main()
