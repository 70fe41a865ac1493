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
from scfixture import Deployment, Gateway, check, mint_token, pykcs11_or_skip  # noqa: E402

P = pykcs11_or_skip()

ECDSA = P.Mechanism(P.CKM_ECDSA, None)
THREADS = 4
USES = 64                  # signatures one token allows (the most a token may)
TOKENS = 30                # tokens per thread: a bound of 1,920 signatures each


def main():
    with Deployment(prefix="p11-race-") as d:
        enrolled = d.enrol("victim", "p256")
        kid = enrolled.get("key_id") or enrolled["keys"][0]["key_id"]
        gw = Gateway(d)
        key = gw.key("victim")[0]
        # One multi-use token per thread, minted ahead: the race is between
        # signing and revoking.
        dgs = [hashlib.sha256(f"doc {t}".encode()).digest() for t in range(THREADS)]
        toks = [[mint_token(d, "victim", kid, [("sha256", dgs[t])], max_signatures=USES)
                 for _ in range(TOKENS)] for t in range(THREADS)]
        got = [0] * THREADS
        refused = threading.Event()
        started = threading.Barrier(THREADS + 1)

        def signer(t):
            s = gw.new_session()
            started.wait()
            # Sign until the key is refused (or the bound is reached).
            for i in range(TOKENS * USES):
                try:
                    gw.sign(key, ECDSA, dgs[t], toks[t][i // USES], session=s)
                    got[t] += 1
                except P.PyKCS11Error:
                    refused.set()
                    break
            s.closeSession()

        threads = [threading.Thread(target=signer, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        started.wait()
        deadline = time.time() + 30
        while sum(got) < 20 and time.time() < deadline:
            time.sleep(0.005)
        before = sum(got)
        d.sc("ca", "revoke", "--user", "victim", "--reason", "keyCompromise")
        for th in threads:
            th.join(timeout=300)
        returned = sum(got)
        check(before >= 20 and refused.is_set() and returned < THREADS * TOKENS * USES,
              f"the revocation landed while {THREADS} threads signed ({before} signatures before "
              f"the officer's command, {returned} in all, then refused)")

        recs = d.audit("victim")
        revoke_seq = [r["seq"] for r in recs if r.get("kind") == "revoke"]
        check(len(revoke_seq) == 1, "one revoke record")
        oks = [r for r in recs if r.get("kind") == "sign" and r.get("outcome") == "ok"]
        after = [r for r in oks if r["seq"] > revoke_seq[0]]
        check(not after, f"no sign ok record follows the revoke record ({len(after)} did)")
        check(len(oks) == returned,
              f"every returned signature has its record, and only those ({len(oks)} records, "
              f"{returned} signatures)")
        withheld = [r for r in recs if r.get("kind") == "sign-refused" and
                    "withheld" in (r.get("detail") or "")]
        print(f"# {returned} signed, {len(withheld)} withheld in the recording transaction")
        gw.close()


if __name__ == "__main__":
    main()
