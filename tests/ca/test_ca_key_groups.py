#!/usr/bin/env python3
"""`smartcert ca key-groups` makes the HSM key of every key group up front,
so a new deployment's first enrolments do not pay for them: with
ca.key_groups = 8, the first run makes 8 keys (seen on the token with
pkcs11-tool), a second run makes none, and an enrolment afterwards lands
in a group whose key already exists (generation 1, nothing made)."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check  # noqa: E402


def group_keys_on_token(d):
    """Labels of the key-group keys on the deployment's token (pkcs11-tool)."""
    if shutil.which("pkcs11-tool") is None:
        return None
    pin = d.conf_get("hsm.pin_source", "file:secrets/backend.pin").split(":", 1)[1]
    with open(os.path.join(os.path.dirname(d.config), pin)) as f:
        pin_value = f.read().strip()
    env = dict(d.env)
    env["SOFTHSM2_CONF"] = os.path.join(d.dir, d.conf_get("hsm.softhsm_conf", "hsm/softhsm2.conf"))
    r = subprocess.run(["pkcs11-tool", "--module", "/usr/lib/softhsm/libsofthsm2.so", "--list-objects",
                        "--login", "--pin", pin_value, "--token-label",
                        d.conf_get("hsm.token_label", "smartcert-backend")],
                       capture_output=True, text=True, env=env)
    return sorted(ln.split("label:", 1)[1].strip() for ln in r.stdout.splitlines()
                  if "label:" in ln and "smartcert-kg-" in ln)


def main():
    with Deployment(prefix="key-groups-") as d:
        d.stop_signd()
        d.conf_set("ca.key_groups", "8", restart=False)
        first = d.sc_json("ca", "key-groups")
        check(first.get("made") == 8 and first.get("present") == 0,
              f"the first run makes the 8 group keys ({first})")
        labels = group_keys_on_token(d)
        if labels is not None:
            check(labels == [f"smartcert-kg-{g:08x}-1" for g in range(8)],
                  f"the token holds generation 1 of each group ({labels})")
        again = d.sc_json("ca", "key-groups")
        check(again.get("made") == 0 and again.get("present") == 8,
              f"a second run makes none ({again})")
        d.enrol("gina", "p256")
        key = d.sc_json("ca", "show", "--user", "gina")["keys"][0]
        check(key["key_group_generation"] == 1 and 0 <= key["key_group"] < 8,
              f"an enrolment lands in a group whose key exists ({key})")
        after = d.sc_json("ca", "key-groups")
        check(after.get("made") == 0 and after.get("present") == 8,
              f"the enrolment made no group key ({after})")
        if labels is not None:
            check(group_keys_on_token(d) == labels, "and the token holds the same group keys")


if __name__ == "__main__":
    main()
