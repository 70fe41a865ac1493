"""Expired certificates leave the CRLs after crl.expired_grace_days and never
come back: not on the next full or delta CRL, and not when the grace period
is raised later (the store remembers the horizon of the last full publish)."""
import os

from crlcommon import (Deployment, bench_serial, check, config_copy, crl_dir, fill, load,
                       verify_all)


def listed(name):
    return {e.serial_number for e in load(os.path.join(crl_dir(d), name))}


def revoked_of(first, n=100, every=10):
    """The serials bench-fill-revoked revokes in a batch of n from `first`."""
    return {bench_serial(first + i) for i in range(0, n, n // every)}


with Deployment() as d:
    # Three batches of 100 certificates, 10 revoked in each: expired 40 days
    # ago (past the 30-day grace), expired 10 days ago (inside it), valid.
    fill(d, "--certs", "100", "--revoked", "10", "--not-after-days", "-40")
    fill(d, "--first", "100", "--certs", "100", "--revoked", "10", "--not-after-days", "-10")
    fill(d, "--first", "200", "--certs", "100", "--revoked", "10")
    gone, grace, valid = revoked_of(0), revoked_of(100), revoked_of(200)
    check(len(gone | grace | valid) == 30, "30 distinct revoked serials")

    r1 = d.sc_json("crl", "publish")
    full = listed("full.crl")
    check(full == grace | valid and r1["entries"] == 20,
          f"full.crl: the 10 expired 40 days ago are off, the other 20 on ({r1['entries']})")
    parts = set()
    for n in range(16):
        parts |= listed(f"part-{n}.crl")
    check(parts == full, "the partition CRLs drop the same entries")

    # A later revocation: neither the full CRLs nor the delta bring back
    # the dropped ones.
    fill(d, "--first", "200", "--certs", "100", "--more", "1")
    r2 = d.sc_json("crl", "publish")
    check(not (listed("full.crl") & gone) and not (listed("full-delta.crl") & gone) and
          len(listed("full-delta.crl")) == 1,
          f"next publish: dropped entries stay off full.crl and full-delta.crl "
          f"({r2['entries']} entries, {r2['delta_entries']} in the delta)")

    # Raising the grace period does not resurrect them.
    env = dict(d.env, SMARTCERT_CONF=config_copy(d, "grace60.conf", "crl",
                                                 "expired_grace_days", "60"))
    r = d.sc("crl", "publish", "--json", env=env)
    check(r.returncode == 0 and not (listed("full.crl") & gone) and
          grace <= listed("full.crl"),
          "grace raised to 60 days: the entries dropped under 30 never reappear, "
          "the ones inside the grace stay")
    r = d.sc("crl", "publish", "--delta", "--json", env=env)
    check(r.returncode == 0 and not (listed("full-delta.crl") & gone),
          "... nor in a delta published after the change")
    verify_all(d)
