"""The store's files edited as someone with write access to them can, with
lmdb-utils' mdb_dump and mdb_load (a test skips without them:
skip_unless("mdb_dump", "mdb_load")).

A dump is a list of lines (mdb_dump's text split at newlines).  Each
database's records stand between its HEADER=END and DATA=END lines as pairs
of lines, key then value, each in hex after one space."""
import os
import shutil
import subprocess


def dump(store, db=None):
    """The lines of `mdb_dump -s DB`, or of `mdb_dump -a` when db is None."""
    args = ["mdb_dump"] + (["-s", db] if db else ["-a"]) + [store]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split("\n")


def load(store, lines, db=None):
    """mdb_load the lines into the store: records are added or replaced,
    never deleted (rebuild() deletes)."""
    args = ["mdb_load"] + (["-s", db] if db else []) + [store]
    subprocess.run(args, input="\n".join(lines), text=True, check=True)


def section(lines, db=None):
    """(first key line, DATA=END line) of database db in a dump of every
    database, or of the one database in the dump when db is None."""
    start = lines.index(f"database={db}") if db else 0
    first = lines.index("HEADER=END", start) + 1
    return first, lines.index("DATA=END", first)


def pairs(lines, db=None):
    """{key: (key line index, value)} of database db, keys and values as bytes."""
    first, end = section(lines, db)
    return {bytes.fromhex(lines[i].strip()): (i, bytes.fromhex(lines[i + 1].strip()))
            for i in range(first, end, 2)}


def rebuild(tmp, store, lines):
    """The store's data.mdb replaced by one loaded from a whole dump:
    mdb_load cannot delete, so what is left out of the dump is gone."""
    fresh = os.path.join(tmp, "rebuilt")
    os.mkdir(fresh)
    load(fresh, lines)
    os.chmod(os.path.join(fresh, "data.mdb"), 0o600)
    os.replace(os.path.join(fresh, "data.mdb"), os.path.join(store, "data.mdb"))
    shutil.rmtree(fresh)


def meta_get(store, key):
    """The value of the store's metadata entry key (bytes), or None."""
    found = pairs(dump(store, "meta")).get(key)
    return found[1] if found else None


def meta_put(store, key, value):
    """Set the store's metadata entry key (bytes) to value (bytes)."""
    lines = dump(store, "meta")
    first, _ = section(lines)
    load(store, lines[:first] + [" " + key.hex(), " " + value.hex(), "DATA=END", ""], "meta")
