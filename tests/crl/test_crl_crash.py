"""kill -9 at random points of a publish over a store with 100,000
revocations: every published file stays a complete CRL signed by the CA,
no published file ever goes back to a lower CRL number, and the next
publish still gets a number above every number seen."""
import os
import random
import signal
import subprocess
import time

from cryptography.x509.oid import ExtensionOID

from crlcommon import Deployment, ca_for, check, fail, fill, lint_all, load_ca, published, read
from scfixture import SMARTCERT as SMARTCERT_BIN
from cryptography import x509

KILLS = 12
seed = int(os.environ.get("CRL_CRASH_SEED", str(int(time.time()))))
print(f"# seed {seed} (set CRL_CRASH_SEED to replay)")
rng = random.Random(seed)


def numbers(d, ca):
    out = {}
    for f in published(d):
        crl = x509.load_der_x509_crl(read(f))
        if not crl.is_signature_valid(ca_for(d, f).public_key()):
            fail(f"{os.path.basename(f)} does not verify after a kill")
        out[os.path.basename(f)] = crl.extensions.get_extension_for_oid(
            ExtensionOID.CRL_NUMBER).value.crl_number
    return out


with Deployment() as d:
    ca = load_ca(d)
    fill(d, "--certs", "200000", "--revoked", "100000")
    t0 = time.monotonic()
    first = d.sc_json("crl", "publish")
    dur = time.monotonic() - t0
    check(first["entries"] > 95000, f"baseline publish: {first['entries']} entries in {dur:.2f}s")
    seen = numbers(d, ca)
    highest = max(seen.values())
    completed = 0
    mixed = 0
    for k in range(KILLS):
        p = subprocess.Popen([SMARTCERT_BIN, "crl", "publish"], env=d.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Not inside the first 150 ms: a kill while SoftHSMv2 loads its
        # token files can leave the token unreadable for the next process,
        # which is the HSM's problem, not the publisher's.
        delay = rng.uniform(0.15, max(0.3, dur * 1.8))
        try:
            p.wait(timeout=delay)
            completed += 1
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        now = numbers(d, ca)
        if set(now) != set(seen):
            fail(f"published file set changed after kill {k}: {set(now) ^ set(seen)}")
        for name, n in now.items():
            if n < seen[name]:
                fail(f"{name} went back from number {seen[name]} to {n} (kill {k}, "
                     f"after {delay:.3f}s)")
        if len(set(now.values())) > 1:
            mixed += 1
        seen = now
        highest = max(highest, max(now.values()))
        print(f"# kill {k} after {delay:.3f}s: numbers {min(now.values())}..{max(now.values())}")
    check(True, f"{KILLS} runs killed at random points ({completed} finished first, {mixed} "
          "killed while renaming): every "
          "file still a valid CRL, no number went backwards")
    # Directed: kill inside the rename phase (widened by a test-only delay
    # between renames), where some files are new and some old.
    env = dict(d.env, SMARTCERT_TEST_CRL_RENAME_DELAY_MS="40")
    for k in range(3):
        before_files = {os.path.basename(f) for f in published(d)}
        p = subprocess.Popen([SMARTCERT_BIN, "crl", "publish"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Wait until at least one file carries a number above the old max.
        deadline = time.monotonic() + 120
        renamed = False
        while time.monotonic() < deadline and p.poll() is None and not renamed:
            time.sleep(0.02)
            try:
                renamed = any(x509.load_der_x509_crl(read(os.path.join(d.dir, "crl", f)))
                              .extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER)
                              .value.crl_number > highest for f in before_files)
            except (ValueError, FileNotFoundError):
                fail("a published file was torn or missing during the rename phase")
        p.send_signal(signal.SIGKILL)
        err = p.communicate(timeout=30)[1]
        now = numbers(d, ca)
        for name, n in now.items():
            if n < seen[name]:
                fail(f"{name} went back from {seen[name]} to {n} (rename-phase kill {k})")
        if not renamed:
            fail(f"publish ended (exit {p.returncode}) before renaming: {err.strip()}")
        check(renamed and len(set(now.values())) > 1,
              f"killed inside the rename phase: numbers {sorted(set(now.values()))}, "
              "every file a valid CRL")
        seen = now
        highest = max(highest, max(now.values()))
    last = d.sc_json("crl", "publish")
    check(last["number"] > highest, f"next publish number {last['number']} > highest seen {highest}")
    final = numbers(d, ca)
    check(all(n == last["number"] for n in final.values()),
          "after a clean publish every file carries the new number")
    lint_all(d)
    check(True, "the final set passes every lint")
