#!/usr/bin/env python3
"""`smartcert store migrate`: a working LMDB deployment moved into
PostgreSQL and back.  The copies digest alike; the deployment then runs
from PostgreSQL (store check, audit chain, a signature refused after a
revocation, a CRL); a copy into a store that holds records is refused; one
byte changed in the database changes the digest.  Run under
tests/lib/with-postgres.sh."""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, check  # noqa: E402

EXIT_STATE = 4

if os.environ.get("SC_TEST_STORE") != "postgresql":
    print("SKIP: run under tests/lib/with-postgres.sh", file=sys.stderr)
    sys.exit(77)


def digest(d, env=None):
    out = d.sc("store", "digest", env=env).stdout
    m = re.fullmatch(r"(\d+) entries, sha256 ([0-9a-f]{64})\n", out)
    check(m is not None, f"store digest prints entries and a SHA-256: {out!r}")
    return int(m.group(1)), m.group(2)


def psql(sql):
    return subprocess.run(["psql", "-Atqc", sql], capture_output=True, text=True,
                          check=True).stdout.strip()


with Deployment("--store", "lmdb") as d:
    for u, name in (("mig1", "MIGRATE One"), ("mig2", "MIGRATE Two")):
        d.sc("ca", "enrol", "--user", u, "--name", name, "--id-number-source", "env:IDN",
             env=dict(d.env, IDN="M" + u[-1] * 7))
    d.sc("ca", "revoke", "--user", "mig2", "--reason", "keyCompromise")
    d.sc("crl", "publish")
    lmdb_count, lmdb_digest = digest(d)
    check(lmdb_count > 10, f"the LMDB store holds records ({lmdb_count})")

    # into PostgreSQL
    pg_conf = os.path.join(d.tmp, "pg.conf")
    with open(pg_conf, "w") as f:
        f.write("[store]\nbackend = postgresql\npg_schema = migrated\n")
    r = d.sc("store", "migrate", "--to", pg_conf)
    check(f"both stores digest to sha256 {lmdb_digest}" in r.stdout,
          f"migrate proves the copy by its digest: {r.stdout.strip()}")
    check(int(psql("SELECT count(*) FROM migrated.users")) == 2, "the users are rows in PostgreSQL")

    # again into the same schema: refused, nothing changed
    r = d.sc("store", "migrate", "--to", pg_conf, check=False)
    check(r.returncode == EXIT_STATE and "not empty" in r.stderr,
          f"a second migration into a store with records is refused ({r.returncode}): {r.stderr.strip()}")

    # the deployment now runs from PostgreSQL
    conf = open(d.config).read()
    pg_section = "[store]\nbackend = postgresql\npg_schema = migrated\n"
    conf_pg = re.sub(r"\[store\]\n(?:[a-z_]+ = [^\n]*\n)+", pg_section, conf)
    check(conf_pg != conf, "the deployment's [store] section switched to PostgreSQL")
    with open(d.config, "w") as f:
        f.write(conf_pg)
    os.rename(os.path.join(d.dir, "store"), os.path.join(d.tmp, "store.lmdb"))
    check(digest(d) == (lmdb_count, lmdb_digest), "the deployment reads the migrated store")
    r = d.sc("store", "check", check=False)
    check(r.returncode == 0 and "audit chain: intact" in r.stdout,
          f"store check on the migrated store: {r.stdout.strip()} {r.stderr.strip()}")
    show = d.sc_json("ca", "show", "--user", "mig2")
    check(show["status"] == "closed" and show["certificates"][0]["status"] == "revoked",
          f"the revocation came along: {show['status']}")
    d.sc("ca", "enrol", "--user", "mig3", "--name", "MIGRATE Three", "--id-number-source",
         "env:IDN", env=dict(d.env, IDN="M3333333"))
    d.sc("crl", "publish")
    check(d.sc("audit", "verify").returncode == 0, "the audit chain goes on in PostgreSQL")
    pg_count, pg_digest = digest(d)
    check(pg_count > lmdb_count, "new records went to PostgreSQL")

    # and back into a new LMDB store
    back_conf = os.path.join(d.tmp, "back.conf")
    with open(back_conf, "w") as f:
        f.write(f"[store]\npath = {os.path.join(d.tmp, 'store.back')}\n")
    r = d.sc("store", "migrate", "--to", back_conf)
    check(f"migrated {pg_count} entries; both stores digest to sha256 {pg_digest}" in r.stdout,
          f"back into LMDB, proved: {r.stdout.strip()}")

    # one changed byte in one record changes the digest
    psql("UPDATE migrated.users SET v = set_byte(v, length(v) - 1, get_byte(v, length(v) - 1) # 255) "
         "WHERE k = 'mig3'::bytea")
    changed = digest(d)
    check(changed[0] == pg_count and changed[1] != pg_digest,
          "an edited row changes the digest")

    # A rollback on PostgreSQL: a pg_dump put back over the schema is refused
    # by the checkpoints until an officer accepts it on purpose.
    pgbin = sorted(__import__("glob").glob("/usr/lib/postgresql/*/bin"))[-1]
    dump = os.path.join(d.tmp, "migrated.dump")
    subprocess.run([f"{pgbin}/pg_dump", "-n", "migrated", "-Fc", "-f", dump], check=True)
    d.sc("ca", "enrol", "--user", "mig4", "--name", "MIGRATE Four", "--id-number-source",
         "env:IDN", env=dict(d.env, IDN="M4444444"))
    psql("DROP SCHEMA migrated CASCADE")
    subprocess.run([f"{pgbin}/pg_restore", "-d", os.environ["PGDATABASE"], dump], check=True)
    r = d.sc("status", check=False)
    check(r.returncode == 8 and "rolled back" in r.stderr,
          f"the restored dump is refused ({r.returncode}): {r.stderr.strip()}")
    r = d.sc("store", "restore", "--from", d.tmp, "--confirm-rollback", check=False)
    check(r.returncode == 2 and "pg_restore" in r.stderr,
          f"a file backup is not restored over a PostgreSQL store: {r.stderr.strip()}")
    r = d.sc("store", "restore", "--in-place", check=False)
    check(r.returncode == 2 and "--confirm-rollback" in r.stderr, "accepting needs --confirm-rollback")
    r = d.sc("store", "restore", "--in-place", "--confirm-rollback")
    check("accepted as it is" in r.stdout, f"the rollback accepted on purpose: {r.stdout.strip()}")
    check(d.sc("status", check=False).returncode == 0, "the deployment is served again")
    restores = d.sc_json("audit", "show", "--kind", "store-restore")
    check(len(restores) == 1 and "by hand" in json.dumps(restores), f"the acceptance is audited: {restores}")
    r = d.sc("ca", "show", "--user", "mig4", check=False)
    check(r.returncode == 3, "the enrolment after the dump is gone with the rollback")

    # Someone with write access to the database edits rows with SQL: the
    # same checks as on LMDB catch it.
    # 1. an audit record's detail changed: the keyed chain breaks there
    last = psql("SELECT encode(k, 'hex') FROM migrated.audit ORDER BY k DESC LIMIT 1")
    psql("UPDATE migrated.audit SET v = set_byte(v, length(v) - 40, get_byte(v, length(v) - 40) # 1) "
         f"WHERE k = '\\x{last}'::bytea")
    r = d.sc("audit", "verify", check=False)
    check(r.returncode == 8, f"an edited audit row breaks the chain (exit {r.returncode}): "
          f"{(r.stdout + r.stderr).strip()[-200:]}")
    check(last != "", "the audit table has rows")
    # 2. a live key's public key changed (a byte of its P-256 point flipped
    #    inside the record): its binding MAC no longer matches
    spki = "3059301306072a8648ce3d020106082a8648ce3d030107"
    kid = d.sc_json("ca", "show", "--user", "mig3")["keys"][0]["key_id"]    # a live key
    changed = psql("UPDATE migrated.keys SET v = set_byte(v, position(x IN v) + 40, "
                   "get_byte(v, position(x IN v) + 40) # 255) "
                   f"FROM (SELECT '\\x{spki}'::bytea AS x) p "
                   f"WHERE k = '{kid}'::bytea AND position(x IN v) > 0 "
                   "RETURNING 1")
    check(changed == "1", f"one key record edited ({changed!r})")
    r = d.sc("store", "check", check=False)
    check(r.returncode == 8 and "keys:" in r.stdout and "every binding MAC matches" not in r.stdout,
          f"store check names an edited key record (exit {r.returncode}): {r.stdout.strip()[-300:]}")

# A deployment whose creation fails after its store was made leaves no
# schema behind (the directory goes too), and a retry under the same schema
# works; a second deployment is never written over the first's schema.
def schema_of():
    return psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'initfail'")


with Deployment("--store", "lmdb") as d:
    target = os.path.join(d.dir, "second")
    env = dict(d.env, SMARTCERT_TEST_INIT_FAIL_AFTER_STORE="1")
    env.pop("SMARTCERT_CONF", None)
    r = subprocess.run([os.environ["SMARTCERT_BIN"], "init", "--dir", target, "--store", "postgresql",
                        "--store-schema", "initfail"], env=env, capture_output=True, text=True)
    check(r.returncode != 0 and "failing on purpose after the store was made" in r.stderr,
          f"init fails after making its store (exit {r.returncode}): {r.stderr.strip()}")
    check(not os.path.exists(target), "the failed init removed its directory")
    check(schema_of() == "0", "the failed init dropped the schema it made")
    env.pop("SMARTCERT_TEST_INIT_FAIL_AFTER_STORE")
    r = subprocess.run([os.environ["SMARTCERT_BIN"], "init", "--dir", target, "--store", "postgresql",
                        "--store-schema", "initfail"], env=env, capture_output=True, text=True)
    check(r.returncode == 0 and schema_of() == "1", f"the retry makes the store: {r.stderr.strip()}")
    rows = psql("SELECT count(*) FROM initfail.meta")
    r = subprocess.run([os.environ["SMARTCERT_BIN"], "init", "--dir", target + "-again", "--store",
                        "postgresql", "--store-schema", "initfail"], env=env, capture_output=True,
                       text=True)
    check(r.returncode != 0 and "already holds a deployment" in r.stderr,
          f"init over a schema in use is refused: {r.stderr.strip()}")
    check(schema_of() == "1" and psql("SELECT count(*) FROM initfail.meta") == rows,
          "the refused init left the schema in use as it was")
