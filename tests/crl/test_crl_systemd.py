"""The systemd units we ship: well formed, the service runs `smartcert crl
publish` once, and the timer fires well inside the CRL validity (at most
every 6 hours)."""
import configparser
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import SRCDIR, check, fail  # noqa: E402

unit_dir = os.path.join(SRCDIR, "dist", "systemd")


def parse(name):
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    with open(os.path.join(unit_dir, name)) as f:
        cp.read_file(f)
    return cp


svc = parse("smartcert-crl-publish.service")
tmr = parse("smartcert-crl-publish.timer")
check(svc["Service"]["Type"] == "oneshot", "service is oneshot")
check(re.search(r"\bsmartcert crl publish\b", svc["Service"]["ExecStart"]) is not None,
      "service runs 'smartcert crl publish'")
check(tmr["Timer"]["Unit"] == "smartcert-crl-publish.service", "timer starts the service")
check(tmr["Timer"].get("Persistent") in ("yes", "true"), "timer catches up after downtime")
m = re.fullmatch(r"(\d+)h", tmr["Timer"]["OnUnitActiveSec"])
check(m is not None and int(m.group(1)) <= 6, "timer period at most 6 hours")
check(tmr["Install"]["WantedBy"] == "timers.target", "timer installs into timers.target")

if shutil.which("systemd-analyze"):
    r = subprocess.run(["systemd-analyze", "calendar", tmr["Timer"]["OnCalendar"]],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"OnCalendar does not parse: {r.stderr}")
    check(True, "systemd-analyze parses OnCalendar")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        os.path.join(unit_dir, "smartcert-crl-publish.timer")],
                       capture_output=True, text=True)
    # verify also checks that ExecStart exists on this machine, which it
    # need not in a build tree: only syntax errors fail the test.
    bad = [ln for ln in (r.stdout + r.stderr).splitlines()
           if "Unknown" in ln or "Failed to parse" in ln or "bad-setting" in ln]
    if bad:
        fail("systemd-analyze verify: " + "; ".join(bad))
    check(True, "systemd-analyze verify reports no syntax error")
else:
    print("# systemd-analyze not installed: syntax checked with configparser only")

# The signing service: its own account, the gateways' group for the socket,
# a private umask, and the accounts sysusers.d creates.
sd = parse("smartcert-signd.service")
check(sd["Service"]["User"] == "smartcert" and sd["Service"]["SupplementaryGroups"] == "smartcert-gw",
      "signd runs as smartcert, in the gateways' group for its socket")
check(sd["Service"]["UMask"] == "0077", "signd creates owner-only files")
check(re.search(r"\bsmartcert-signd\b", sd["Service"]["ExecStart"]) is not None, "signd unit runs smartcert-signd")
with open(os.path.join(SRCDIR, "dist", "sysusers.d", "smartcert.conf")) as f:
    su = [ln.split() for ln in f if ln.strip() and not ln.startswith("#")]
check(["u", "smartcert"] == su[0][:2] and ["g", "smartcert-gw"] == su[1][:2],
      "sysusers.d creates the service account and the gateways' group")
if shutil.which("systemd-analyze"):
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", os.path.join(unit_dir, "smartcert-signd.service")],
                       capture_output=True, text=True)
    bad = [ln for ln in r.stderr.splitlines() if "smartcert-signd.service" in ln and "Unknown" in ln]
    check(not bad, f"signd unit: no unknown settings ({bad})")
print("PASS")
