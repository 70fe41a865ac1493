#!/usr/bin/python3
"""A compromised gateway against the limits of the tokens it holds:

* a single-use token is logged in (C_Login(CKU_CONTEXT_SPECIFIC)) on three
  sessions while it is unused; one signs, the second is refused as a
  replay, and once the token has expired and `ca sweep` has purged its
  replay record, the third is refused too: a context login does not keep a
  token alive (S6 at C_Sign), so no second signature ever appears;
* tokens of one resident presented on another resident's key, at a context
  login or deposited naming a key their subject does not own, never lock
  that key (S9): otherwise one old token of anyone's would lock every key
  in turn.  A resident's own refused tokens still do;
* a deposit made before a backup and spent after it is not spent again
  once `store restore` has put the backup back, and the same token cannot
  be deposited again (S7);
* tokens naming another resident count against the gateway: past
  signd.garbage_threshold its context logins are refused for the window;
* a signature whose token expires between C_Sign and its commit (held
  there by a test hook) is withheld by the commit."""
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import (SMARTCERT, Deployment, Gateway, check, expect_ckr, mint_token,  # noqa: E402
                       pykcs11_or_skip, skip_unless)

P = pykcs11_or_skip()
if os.environ.get("SMARTCERT_TEST_HOOKS") != "1":
    skip_unless("a build with -Dtest_hooks=true (the service's clock is moved)")

ECDSA = P.Mechanism(P.CKM_ECDSA, None)


def dg(text):
    return hashlib.sha256(text.encode()).digest()


def armed(gw, key, token):
    """A new session with C_SignInit done and the token logged in."""
    s = gw.new_session()
    rv = s.lib.C_SignInit(s.session, ECDSA.to_native(), key)
    check(rv == P.CKR_OK, f"C_SignInit ({rv:#x})")
    s.login(token, user_type=P.CKU_CONTEXT_SPECIFIC)
    return s


def sign_now(s, digest):
    """C_Sign on a session armed earlier: its CK_RV."""
    sig = P.ckbytelist(bytes(1024))
    return s.lib.C_Sign(s.session, P.ckbytelist(digest), sig)


def approve(d, token):
    with tempfile.NamedTemporaryFile("w", dir=d.tmp, delete=False) as f:
        f.write(token)
    r = d.sc("approve", "--token", "@" + f.name, check=False)
    os.unlink(f.name)
    return r.returncode, r.stderr.strip()


def signed_with(d, user, tid):
    """How many `sign ok` records name the token id `tid` (bytes)."""
    return sum(1 for r in d.audit(user) if r.get("kind") == "sign" and r.get("outcome") == "ok"
               and r.get("token_id") == tid.hex())


def main():
    with Deployment(prefix="signd-token-limits-") as d:
        kid = {}
        for u in ("alice", "bob", "carol"):
            e = d.enrol(u, "p256")
            kid[u] = e.get("key_id") or e["keys"][0]["key_id"]
        gw = Gateway(d)
        key = {u: gw.key(u)[0] for u in kid}

        # 1. A single-use token armed on three sessions, then outlived.
        now = int(time.time())
        d.set_time(now)
        d1 = dg("one signature only")
        tid = os.urandom(16)
        tok = mint_token(d, "alice", kid["alice"], [("sha256", d1)], now=now, not_after=now + 60,
                         token_id=tid)
        sessions = [armed(gw, key["alice"], tok) for _ in range(3)]
        check(sign_now(sessions[0], d1) == P.CKR_OK, "the first armed session signs")
        rv = sign_now(sessions[1], d1)
        check(rv != P.CKR_OK, f"the second is refused: the token is spent ({P.CKR.get(rv, rv)})")
        later = now + 60 + 120 + 30          # past notAfter + authz.max_skew
        d.set_time(later)
        r = d.sc("ca", "sweep", "--json", env=dict(d.env, SMARTCERT_FAKE_TIME=str(later)))
        check(json.loads(r.stdout).get("replay_purged", 0) >= 1,
              f"ca sweep purged the expired token's replay record ({r.stdout.strip()[:200]})")
        rv = sign_now(sessions[2], d1)
        check(rv == P.CKR_PIN_EXPIRED,
              f"the third, armed before the purge, is refused once the token expired ({P.CKR.get(rv, rv)})")
        check(signed_with(d, "alice", tid) == 1, "one signature with the single-use token, no more")
        refused = [x for x in d.audit("alice") if x.get("kind") == "sign-refused"
                   and "expired since the context login" in (x.get("detail") or "")]
        check(len(refused) == 1 and refused[0].get("outcome") == "token-expired",
              f"the refusal is audited as token-expired ({refused[-1:]})")
        d.set_time(None)
        for s in sessions:
            s.closeSession()

        # 2. Other residents' tokens never lock a key; its own still do.
        #    (The service's clock stands still, so that the gateway's
        #    throttle window cannot roll over in the middle.)
        now = int(time.time())
        d.set_time(now)
        d3 = dg("lockout")
        old = mint_token(d, "bob", kid["bob"], [("sha256", d3)], now=now - 86400, not_after=now - 86000)
        for _ in range(8):
            expect_ckr(lambda: gw.sign(key["alice"], ECDSA, d3, old), P.CKR_PIN_EXPIRED,
                       "bob's expired token on alice's key: refused")
        mine = mint_token(d, "bob", kid["alice"], [("sha256", d3)])
        for _ in range(8):
            expect_ckr(lambda: gw.sign(key["alice"], ECDSA, d3, mine), P.CKR_PIN_INCORRECT,
                       "a token naming alice's key for bob: refused")
            rc, _ = approve(d, mine)
            check(rc == 4, "deposited, a token naming alice's key for bob is refused")
        ok = mint_token(d, "alice", kid["alice"], [("sha256", d3)])
        check(len(gw.sign(key["alice"], ECDSA, d3, ok)) == 64,
              "alice's key is not locked by the tokens of others: her own signs")
        throttled = [x for x in d.audit() if "names another resident or key" in (x.get("detail") or "")]
        check(len(throttled) == 16, f"each is audited as naming another resident or key ({len(throttled)})")
        # They count against the gateway instead: past signd.garbage_threshold
        # (20) in one window, its context logins are refused whatever the token.
        for _ in range(5):
            expect_ckr(lambda: gw.sign(key["alice"], ECDSA, d3, old), P.CKR_PIN_EXPIRED,
                       "bob's expired token on alice's key, once more: refused")
        ok = mint_token(d, "alice", kid["alice"], [("sha256", d3)])
        expect_ckr(lambda: gw.sign(key["alice"], ECDSA, d3, ok), P.CKR_PIN_LOCKED,
                   "21 tokens naming another resident: the gateway is throttled, alice's own "
                   "token refused too")
        check(any("gateway throttled" in (x.get("detail") or "") for x in d.audit("alice")),
              "the throttle is audited")
        d.set_time(now + 61)                 # the next window
        check(len(gw.sign(key["alice"], ECDSA, d3, ok)) == 64,
              "in the next window alice signs: the throttle did not lock her key")

        own_old = mint_token(d, "carol", kid["carol"], [("sha256", d3)], now=now - 86400,
                             not_after=now - 86000)
        for _ in range(5):
            expect_ckr(lambda: gw.sign(key["carol"], ECDSA, d3, own_old), P.CKR_PIN_EXPIRED,
                       "carol's own expired token: refused")
        fresh = mint_token(d, "carol", kid["carol"], [("sha256", d3)])
        expect_ckr(lambda: gw.sign(key["carol"], ECDSA, d3, fresh), P.CKR_PIN_LOCKED,
                   "five refusals of carol's own tokens lock her key (S9 unchanged)")

        # 3. A deposit spent after a backup, and the backup restored.
        d2 = dg("deposited, then rolled back")
        tid2 = os.urandom(16)
        tok2 = mint_token(d, "bob", kid["bob"], [("sha256", d2)], token_id=tid2)
        check(approve(d, tok2)[0] == 0, "a deposit for bob")
        backup = os.path.join(d.tmp, "backup")
        gw.close()
        del gw, key
        gc.collect()       # the old PyKCS11Lib finalizes the module when collected
        d.stop_signd()
        d.sc("store", "backup", backup)
        d.start_signd()
        gw = Gateway(d)
        key = {u: gw.key(u)[0] for u in kid}
        check(len(gw.sign(key["bob"], ECDSA, d2, None)) == 64, "the deposit is spent by a plain C_Sign")
        expect_ckr(lambda: gw.sign(key["bob"], ECDSA, d2, None), P.CKR_USER_NOT_LOGGED_IN,
                   "spent: a second plain C_Sign is refused")
        gw.close()
        del gw, key
        gc.collect()       # the old PyKCS11Lib finalizes the module when collected
        d.stop_signd()
        d.sc("store", "restore", "--from", backup, "--confirm-rollback")
        d.start_signd()
        gw = Gateway(d)
        key = {u: gw.key(u)[0] for u in kid}
        try:
            gw.sign(key["bob"], ECDSA, d2, None)
            check(False, "after the restore the deposit that came back with the store signs again")
        except P.PyKCS11Error:
            check(True, "after the restore the deposit that came back with the store is refused")
        check(signed_with(d, "bob", tid2) == 0,
              "the restored store holds no signature with the token, and none was added")
        rc, err = approve(d, tok2)
        check(rc == 4 and "restored" in err, f"the token cannot be deposited again ({rc}: {err})")
        gw.close()
        del gw, key
        gc.collect()

        # 4. A token that expires while its signature is being made: the
        #    signature is checked at C_Sign, made in the HSM, then held (test
        #    hook) while the clock moves past the token's notAfter + skew;
        #    the commit checks the time again and withholds it.
        d.stop_signd()
        hold = os.path.join(d.tmp, "hold-before-commit")
        d.start_signd(env=dict(d.env, SMARTCERT_TEST_HOLD_BEFORE_COMMIT=hold))
        now = int(time.time()) + 200         # tokens from before the restore are refused
        d.set_time(now)
        doc = os.path.join(d.tmp, "late.txt")
        with open(doc, "w") as f:
            f.write("signed in time, recorded too late")
        signed_before = sum(1 for x in d.audit("bob") if x.get("kind") == "sign"
                            and x.get("outcome") == "ok")
        open(hold, "w").close()
        p = subprocess.Popen([SMARTCERT, "sign", "--user", "bob", "--in", doc, "--authorize",
                              "--out", doc + ".p7s"],
                             env=dict(d.env, SMARTCERT_FAKE_TIME=str(now)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not os.path.exists(hold + ".reached") and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        check(os.path.exists(hold + ".reached"),
              f"the signature reached the hold before its commit ({p.poll()}: "
              f"{p.stderr.read()[-300:] if p.poll() is not None else 'still running'})")
        d.set_time(now + 300 + 120 + 30)     # past the token's notAfter + authz.max_skew
        os.unlink(hold)
        out, err = p.communicate(timeout=60)
        check(p.returncode != 0 and not os.path.exists(doc + ".p7s"),
              f"smartcert sign gets no signature ({p.returncode}: {err.strip()[-160:]})")
        late = [x for x in d.audit("bob") if x.get("kind") == "sign-refused"
                and "recorded" in (x.get("detail") or "")]
        check(len(late) == 1 and late[0].get("outcome") == "token-expired"
              and "withheld" in late[0].get("detail", ""),
              f"the commit withheld it, audited as token-expired ({late})")
        check(sum(1 for x in d.audit("bob") if x.get("kind") == "sign" and x.get("outcome") == "ok")
              == signed_before, "no signature of bob's was recorded")


if __name__ == "__main__":
    main()
