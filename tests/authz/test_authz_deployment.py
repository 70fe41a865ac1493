#!/usr/bin/python3
"""`smartcert authz` against a real deployment made by `smartcert init`: the
demo key, issuer and audience come from the deployment's config, and the
token verifies against its trust (authz/authz-demo.pub.pem)."""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check, skip_unless  # noqa: E402

skip_unless("softhsm2-util")

with Deployment(prefix="sc-authz-") as d:
    digest = hashlib.sha256(b"deployment document").hexdigest()
    tok = d.sc("authz", "issue", "--user", "alice", "--key", "alice-k1", "--digest", digest).stdout.strip()
    v = json.loads(d.sc("authz", "verify", "--json", tok).stdout)
    check(v["valid"] is True, "demo token verifies against the deployment trust")
    check(v["issuer"] == "smartcert-demo-authz" and v["audience"] == "smartcert-signing",
          "issuer and audience from the deployment config")
    pub = os.path.join(d.dir, "authz", "authz-demo.pub.pem")
    r = d.sc("authz", "keygen", "--out", os.path.join(d.tmp, "rogue.pem"))
    rogue = d.sc("authz", "issue", "--user", "alice", "--key", "alice-k1", "--digest", digest,
                 "--signing-key", os.path.join(d.tmp, "rogue.pem")).stdout.strip()
    r = d.sc("authz", "verify", "--json", rogue, check=False)
    check(r.returncode != 0 and json.loads(r.stdout)["error"] == "token-issuer",
          "a key the deployment does not trust is refused")
    check(os.path.exists(pub), "deployment trusts authz/authz-demo.pub.pem")
