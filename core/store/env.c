/*
 * The LMDB environment and its transactions: the databases (docs/store-layout.md),
 * opening and closing, read-transaction reuse, the arena that holds what a
 * write transaction decodes, LMDB errors in the project's vocabulary, and
 * the statistics.
 * Part of the LMDB store (internal.h; contract: sc_store.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <lmdb.h>

#include "sc_err.h"
#include "sc_store.h"
#include "sc_util.h"
#include "internal.h"

/* clang-format off */
const struct sc_db_def sc_dbs[SC_DB_COUNT] = {
	[SC_DB_META] = { "meta", 0 },
	[SC_DB_USERS] = { "users", 0 },
	[SC_DB_IDHASH] = { "idhash", 0 },
	[SC_DB_KEYS] = { "keys", 0 },
	[SC_DB_KEYSEQ] = { "keyseq", 0 },
	[SC_DB_USERKEYS] = { "userkeys", MDB_DUPSORT },
	[SC_DB_CERTS] = { "certs", 0 },
	[SC_DB_USERCERTS] = { "usercerts", MDB_DUPSORT },
	[SC_DB_EXPIRY] = { "expiry", 0 },
	[SC_DB_REVOKED] = { "revoked", 0 },
	[SC_DB_REVLOG] = { "revlog", 0 },
	[SC_DB_KEYFAIL] = { "keyfail", 0 },
	[SC_DB_REPLAY] = { "replay", 0 },
	[SC_DB_REPLAYEXP] = { "replayexp", 0 },
	[SC_DB_OCSP] = { "ocsp", 0 },
	[SC_DB_OCSPDUE] = { "ocspdue", 0 },
	[SC_DB_AUDIT] = { "audit", 0 },
	[SC_DB_GROUPKEYS] = { "groupkeys", MDB_DUPSORT },
};
/* clang-format on */

/* Under this much free space the disk counts as full: a commit writes
 * pages of 4 KiB, and LMDB reports a page write that the full disk cut
 * short as EIO, not ENOSPC. */
#define SC_STORE_DISK_FULL_BYTES (1024u * 1024u)

/* Bytes free on the file system holding `path` for an unprivileged writer
 * (root without CAP_SYS_RESOURCE cannot use the reserved blocks either),
 * or -1 if unknown. */
static long long store_disk_free(const char *path)
{
	struct statvfs vfs;

	if (statvfs(path, &vfs) != 0)
		return -1;
	return (long long)vfs.f_bavail * (long long)vfs.f_frsize;
}

int sc_mdb_err(sc_txn *t, int rc, int db, const char *what)
{
	const char *dbn = db >= 0 ? sc_dbs[db].name : "environment";
	const char *path = t != NULL ? t->st->path : "";
	long long avail;
	int err;

	if (rc == EIO && t != NULL && (avail = store_disk_free(path)) >= 0 &&
	    avail < (long long)SC_STORE_DISK_FULL_BYTES) {
		err = sc_error_set(
			SC_ERR_STORE_FULL,
			"store %s cannot grow while %s (a short write, %s, with %lld bytes "
			"left on its file system): the disk holding it is full; free disk "
			"space; the transaction was not applied",
			path, what, strerror(rc), avail);
		goto out;
	}
	switch (rc) {
	case MDB_NOTFOUND:
		return SC_ERR_NOT_FOUND;
	case MDB_KEYEXIST:
		return SC_ERR_EXISTS;
	case MDB_MAP_FULL:
		err = sc_error_set(
			SC_ERR_STORE_FULL,
			"store %s is full while %s: its map (store.map_size) is used up; raise "
			"store.map_size; the transaction was not applied",
			path, what);
		break;
	case ENOSPC:
	case EDQUOT:
		err = sc_error_set(
			SC_ERR_STORE_FULL,
			"store %s cannot grow while %s (%s): the disk holding it is full or "
			"its quota used up; free disk space; the transaction was not applied",
			path, what, strerror(rc));
		break;
	case EACCES:
	case EROFS:
	case EPERM:
		err = sc_error_set(
			SC_ERR_READONLY,
			"store %s is read-only while %s: check the directory's permissions", path,
			what);
		break;
	case MDB_READERS_FULL:
		err = sc_error_set(
			SC_ERR_BUSY,
			"store %s has no free reader slot while %s: too many concurrent readers",
			path, what);
		break;
	case ENOMEM:
		err = sc_error_set(SC_ERR_NOMEM, "out of memory while %s", what);
		break;
	default:
		err = sc_error_set(SC_ERR_STORE, "store %s: database '%s': %s failed: %s", path,
				   dbn, what, mdb_strerror(rc));
		break;
	}
out:
	if (t != NULL && t->write)
		t->err = err;
	return err;
}

/* ---- arena ----------------------------------------------------------- */

void *sc_arena_alloc(sc_txn *t, size_t n)
{
	struct sc_arena_chunk *c = t->arena;
	void *p;

	n = (n + 7) & ~(size_t)7;
	if (c == NULL || c->cap - c->used < n) {
		size_t cap = n > 16384 ? n : 16384;

		c = malloc(sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = t->arena;
		t->arena = c;
	}
	p = c->data + c->used;
	c->used += n;
	return p;
}

struct sc_arena_mark sc_arena_mark(sc_txn *t)
{
	struct sc_arena_mark m = { t->arena, t->arena != NULL ? t->arena->used : 0 };

	return m;
}

void sc_arena_release(sc_txn *t, struct sc_arena_mark m)
{
	struct sc_arena_chunk *c;

	while (t->arena != NULL && t->arena != m.chunk) {
		c = t->arena;
		t->arena = c->next;
		free(c);
	}
	if (t->arena != NULL)
		t->arena->used = m.used;
}

/* Keep the first (oldest) chunk for reuse, free the rest. */
static void arena_reset(sc_txn *t, int keep)
{
	struct sc_arena_chunk *c = t->arena, *next;

	while (c != NULL) {
		next = c->next;
		if (keep && next == NULL) {
			c->used = 0;
			t->arena = c;
			return;
		}
		free(c);
		c = next;
	}
	t->arena = NULL;
}

/* ---- environment ----------------------------------------------------- */

static int open_err(const char *path, int rc, const char *what)
{
	switch (rc) {
	case EACCES:
	case EROFS:
	case EPERM:
		return sc_error_set(
			SC_ERR_READONLY,
			"cannot %s store %s: permission denied or read-only file system; "
			"run as the store's owner or fix the directory's permissions",
			what, path);
	case ENOENT:
		return sc_error_set(SC_ERR_NOT_FOUND, "no store at %s: run `smartcert init` first",
				    path);
	case ENOSPC:
	case MDB_MAP_FULL:
		return sc_error_set(SC_ERR_STORE_FULL, "cannot %s store %s: disk full", what, path);
	case MDB_VERSION_MISMATCH:
	case MDB_INVALID:
		return sc_error_set(
			SC_ERR_STORE,
			"%s is not a usable LMDB store (%s): wrong file or LMDB version", path,
			mdb_strerror(rc));
	default:
		return sc_error_set(SC_ERR_STORE, "cannot %s store %s: %s", what, path,
				    mdb_strerror(rc));
	}
}

static int store_init_dbs(sc_store *st, int *created)
{
	MDB_txn *txn = NULL;
	int rc, i, rdonly = (st->flags & SC_STORE_RDONLY) != 0, rv = SC_ERR_STORE;

	rc = mdb_txn_begin(st->env, NULL, rdonly ? MDB_RDONLY : 0, &txn);
	if (rc != 0) {
		rv = open_err(st->path, rc, "open");
		goto out;
	}
	rc = mdb_dbi_open(txn, sc_dbs[SC_DB_META].name, 0, &st->dbi[SC_DB_META]);
	if (rc == MDB_NOTFOUND) {
		if (rdonly || !(st->flags & SC_STORE_CREATE)) {
			rv = sc_error_set(
				SC_ERR_STORE,
				"%s holds an LMDB environment that is not a smartcert store",
				st->path);
			goto out;
		}
		for (i = 0; i < SC_DB_COUNT; i++) {
			rc = mdb_dbi_open(txn, sc_dbs[i].name, sc_dbs[i].flags | MDB_CREATE,
					  &st->dbi[i]);
			if (rc != 0) {
				rv = open_err(st->path, rc, "create");
				goto out;
			}
		}
		*created = 1;
	} else if (rc != 0) {
		rv = open_err(st->path, rc, "open");
		goto out;
	} else {
		for (i = 0; i < SC_DB_COUNT; i++) {
			rc = mdb_dbi_open(txn, sc_dbs[i].name, sc_dbs[i].flags, &st->dbi[i]);
			/* the key-group index came later: a writer adds it to an
			 * older store (empty: its keys are under the master key) */
			if (rc == MDB_NOTFOUND && i == SC_DB_GROUPKEYS && !rdonly)
				rc = mdb_dbi_open(txn, sc_dbs[i].name, sc_dbs[i].flags | MDB_CREATE,
						  &st->dbi[i]);
			if (rc != 0) {
				rv = sc_error_set(SC_ERR_STORE, "store %s lacks database '%s': %s",
						  st->path, sc_dbs[i].name, mdb_strerror(rc));
				goto out;
			}
		}
	}
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0) {
		rv = open_err(st->path, rc, "initialise");
		goto out;
	}
	rv = SC_OK;
out:
	if (txn != NULL)
		mdb_txn_abort(txn);
	return rv;
}

int sc_store_schema_check(sc_store *st, int create)
{
	unsigned char sv[4];
	sc_txn *t = NULL;
	MDB_val v;
	int rv;

	if (create) {
		sc_be32(sv, SC_SCHEMA_VERSION);
		if ((rv = sc_txn_begin(st, SC_TXN_WRITE, &t)) != SC_OK)
			return rv;
		rv = sc_put(t, SC_DB_META, SC_META_SCHEMA, strlen(SC_META_SCHEMA), sv, 4,
			    MDB_NOOVERWRITE);
		if (rv == SC_ERR_EXISTS)
			rv = SC_OK; /* a second creator of one PostgreSQL schema */
		if (rv != SC_OK) {
			sc_txn_abort(t);
			return rv;
		}
		if ((rv = sc_txn_commit(t)) != SC_OK)
			return rv;
	}
	if ((rv = sc_txn_begin(st, SC_TXN_READ, &t)) != SC_OK)
		return rv;
	rv = sc_get(t, SC_DB_META, SC_META_SCHEMA, strlen(SC_META_SCHEMA), &v);
	if (rv == SC_ERR_NOT_FOUND || (rv == SC_OK && v.mv_size != 4))
		rv = sc_error_set(SC_ERR_STORE, "%s is not a smartcert store (no schema version)",
				  st->path);
	else if (rv == SC_OK && sc_rd32(v.mv_data) != SC_SCHEMA_VERSION)
		rv = sc_error_set(
			SC_ERR_STORE,
			"store %s has schema version %u, this smartcert reads version %u: "
			"use the matching smartcert release",
			st->path, sc_rd32(v.mv_data), SC_SCHEMA_VERSION);
	sc_txn_abort(t);
	return rv;
}

int sc_store_open(const char *path, uint64_t map_size, unsigned flags, sc_store **out)
{
	sc_store *st = NULL;
	struct stat stb;
	char *datafile = NULL;
	unsigned eflags = MDB_NOTLS | MDB_NORDAHEAD;
	int rc, attempt, dead = 0, created = 0, rv = SC_ERR_STORE;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for store handle");
	*out = NULL;
	if (path == NULL || *path == '\0')
		return sc_error_set(SC_ERR_INVALID, "no store directory given (store.path)");
	if ((flags & SC_STORE_RDONLY) && (flags & SC_STORE_CREATE))
		return sc_error_set(SC_ERR_INVALID, "cannot create a store read-only");
	datafile = sc_path_with(path, "/data.mdb");
	if (datafile == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	if (stat(datafile, &stb) != 0) {
		if (errno != ENOENT) {
			rv = open_err(path, errno, "open");
			goto out;
		}
		if (!(flags & SC_STORE_CREATE)) {
			rv = sc_error_set(SC_ERR_NOT_FOUND,
					  "no store at %s: run `smartcert init` first", path);
			goto out;
		}
		rv = sc_mkdir_p(path, 0700);
		if (rv != SC_OK)
			goto out;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (pthread_mutex_init(&st->lock, NULL) != 0) {
		free(st);
		st = NULL;
		rv = sc_error_set(SC_ERR_NOMEM, "cannot create a mutex");
		goto out;
	}
	st->flags = flags;
	st->path = strdup(path);
	if (st->path == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (flags & SC_STORE_RDONLY)
		eflags |= MDB_RDONLY;
	if (flags & SC_STORE_NOSYNC)
		eflags |= MDB_NOSYNC;
	for (attempt = 0;; attempt++) {
		/* the default map is a reservation of address space; where that
		 * is limited (ulimit -v, valgrind) fall back to smaller ones */
		uint64_t size = map_size != 0 ? map_size : SC_DEFAULT_MAP_SIZE >> (2 * attempt);

		rc = mdb_env_create(&st->env);
		if (rc != 0) {
			st->env = NULL;
			rv = open_err(path, rc, "open");
			goto out;
		}
		mdb_env_set_maxdbs(st->env, SC_DB_COUNT + 4);
		mdb_env_set_maxreaders(st->env, SC_MAX_READERS);
		rc = mdb_env_set_mapsize(st->env, (size_t)size);
		if (rc == 0)
			rc = mdb_env_open(st->env, path, eflags, 0600);
		if (rc == 0)
			break;
		mdb_env_close(st->env);
		st->env = NULL;
		if (map_size != 0 || attempt >= 3 || (rc != ENOMEM && rc != EINVAL)) {
			rv = open_err(path, rc, "open");
			goto out;
		}
	}
	/* free reader slots left by processes that died */
	mdb_reader_check(st->env, &dead);
	rv = store_init_dbs(st, &created);
	if (rv != SC_OK)
		goto out;
	if ((rv = sc_store_schema_check(st, created)) != SC_OK)
		goto out;
	*out = st;
	st = NULL;
	rv = SC_OK;
out:
	sc_store_close(st);
	free(datafile);
	return rv;
}

static void txn_free(sc_txn *t)
{
	if (t == NULL)
		return;
	arena_reset(t, 0);
	free(t);
}

void sc_store_close(sc_store *st)
{
	sc_txn *t, *next;

	if (st == NULL)
		return;
	sc_pg_close(st->pg);
	for (t = st->read_cache; t != NULL; t = next) {
		next = t->next;
		mdb_txn_abort(t->txn);
		txn_free(t);
	}
	if (st->env != NULL)
		mdb_env_close(st->env);
	pthread_mutex_destroy(&st->lock);
	free(st->path);
	free(st);
}

int sc_store_is_shared(const sc_store *st)
{
	return st != NULL && st->pg != NULL;
}

int sc_store_sync(sc_store *st)
{
	int rc;

	if (st == NULL)
		return sc_error_set(SC_ERR_INVALID, "no store");
	/* PostgreSQL's commit is already durable */
	if ((st->flags & SC_STORE_RDONLY) || st->pg != NULL)
		return SC_OK;
	rc = mdb_env_sync(st->env, 1);
	if (rc != 0)
		return sc_mdb_err(NULL, rc, -1, "syncing");
	return SC_OK;
}

/* ---- transactions ---------------------------------------------------- */

int sc_txn_begin(sc_store *st, int mode, sc_txn **out)
{
	sc_txn *t = NULL;
	int rc, tries, rv = SC_ERR_STORE;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for transaction");
	*out = NULL;
	if (st == NULL || (mode != SC_TXN_READ && mode != SC_TXN_WRITE))
		return sc_error_set(SC_ERR_INVALID, "bad transaction request");
	if (mode == SC_TXN_WRITE && (st->flags & SC_STORE_RDONLY))
		return sc_error_set(SC_ERR_READONLY, "store %s was opened read-only", st->path);
	if (st->pg != NULL) {
		t = calloc(1, sizeof(*t));
		if (t == NULL)
			return sc_error_set(SC_ERR_NOMEM, "out of memory");
		t->st = st;
		t->write = mode == SC_TXN_WRITE;
		if ((rv = sc_pg_txn_begin(t)) != SC_OK)
			goto out;
		*out = t;
		return SC_OK;
	}

	if (mode == SC_TXN_READ) {
		pthread_mutex_lock(&st->lock);
		t = st->read_cache;
		if (t != NULL) {
			st->read_cache = t->next;
			st->read_cached--;
		}
		pthread_mutex_unlock(&st->lock);
		if (t != NULL) {
			t->next = NULL;
			rc = mdb_txn_renew(t->txn);
			if (rc == 0) {
				*out = t;
				return SC_OK;
			}
			mdb_txn_abort(t->txn);
			txn_free(t);
			t = NULL;
			if (rc != MDB_MAP_RESIZED)
				return sc_mdb_err(NULL, rc, -1, "starting a read transaction");
		}
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	t->st = st;
	t->write = mode == SC_TXN_WRITE;
	for (tries = 0;; tries++) {
		rc = mdb_txn_begin(st->env, NULL, t->write ? 0 : MDB_RDONLY, &t->txn);
		if (rc == MDB_MAP_RESIZED && tries == 0) {
			/* another process grew the map: adopt its size */
			mdb_env_set_mapsize(st->env, 0);
			continue;
		}
		break;
	}
	if (rc != 0) {
		t->txn = NULL;
		rv = sc_mdb_err(t, rc, -1,
				t->write ? "starting a write transaction" :
					   "starting a read transaction");
		goto out;
	}
	*out = t;
	t = NULL;
	rv = SC_OK;
out:
	txn_free(t);
	return rv;
}

static void txn_release(sc_txn *t, int commit_rc_ok)
{
	sc_store *st = t->st;

	if (!t->write && commit_rc_ok) {
		mdb_txn_reset(t->txn);
		arena_reset(t, 1);
		t->audit_known = 0;
		pthread_mutex_lock(&st->lock);
		if (st->read_cached < SC_READ_CACHE_MAX) {
			t->next = st->read_cache;
			st->read_cache = t;
			st->read_cached++;
			t = NULL;
		}
		pthread_mutex_unlock(&st->lock);
		if (t == NULL)
			return;
		mdb_txn_abort(t->txn);
	}
	txn_free(t);
}

int sc_txn_commit(sc_txn *t)
{
	int rc, rv;

	if (t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction");
	if (t->st->pg != NULL && (!t->write || t->err != 0)) {
		rv = t->err;
		sc_pg_txn_end(t, 0);
		txn_free(t);
		if (rv != 0)
			return sc_error_set(rv,
					    "transaction not committed after an earlier error: %s",
					    sc_error_detail());
		return SC_OK;
	}
	if (t->st->pg != NULL) {
		rv = sc_pg_txn_end(t, 1);
		txn_free(t);
		return rv;
	}
	if (!t->write) {
		txn_release(t, 1);
		return SC_OK;
	}
	if (t->err != 0) {
		rv = t->err;
		mdb_txn_abort(t->txn);
		txn_free(t);
		return sc_error_set(rv, "transaction not committed after an earlier error: %s",
				    sc_error_detail());
	}
	rc = mdb_txn_commit(t->txn);
	t->txn = NULL;
	rv = rc == 0 ? SC_OK : sc_mdb_err(t, rc, -1, "committing");
	txn_free(t);
	return rv;
}

void sc_txn_abort(sc_txn *t)
{
	if (t == NULL)
		return;
	if (t->st->pg != NULL) {
		sc_pg_txn_end(t, 0);
		txn_free(t);
		return;
	}
	if (!t->write) {
		txn_release(t, 1);
		return;
	}
	mdb_txn_abort(t->txn);
	txn_free(t);
}

/* ---- statistics ------------------------------------------------------- */

int sc_store_stats_get(sc_txn *t, sc_store_stats *out)
{
	static const struct {
		int db;
		size_t off;
	} map[] = {
		{ SC_DB_USERS, offsetof(sc_store_stats, users) },
		{ SC_DB_KEYS, offsetof(sc_store_stats, keys) },
		{ SC_DB_CERTS, offsetof(sc_store_stats, certs) },
		{ SC_DB_REVOKED, offsetof(sc_store_stats, revoked) },
		{ SC_DB_REPLAY, offsetof(sc_store_stats, replay) },
		{ SC_DB_OCSP, offsetof(sc_store_stats, ocsp) },
		{ SC_DB_AUDIT, offsetof(sc_store_stats, audit) },
	};
	MDB_envinfo info;
	MDB_stat ms;
	size_t i;
	int rc;

	if (out == NULL || t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	memset(out, 0, sizeof(*out));
	if (t->st->pg != NULL) {
		for (i = 0; i < sizeof(map) / sizeof(map[0]); i++)
			if ((rc = sc_pg_count(t, map[i].db,
					      (uint64_t *)((char *)out + map[i].off))) != SC_OK)
				return rc;
		/* no map: the database's size on disk */
		return sc_pg_size(t, &out->map_used);
	}
	for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		rc = mdb_stat(t->txn, t->st->dbi[map[i].db], &ms);
		if (rc != 0)
			return sc_mdb_err(t, rc, map[i].db, "reading statistics");
		*(uint64_t *)((char *)out + map[i].off) = ms.ms_entries;
	}
	rc = mdb_env_info(t->st->env, &info);
	if (rc != 0)
		return sc_mdb_err(t, rc, -1, "reading statistics");
	rc = mdb_env_stat(t->st->env, &ms);
	if (rc != 0)
		return sc_mdb_err(t, rc, -1, "reading statistics");
	out->map_size = info.me_mapsize;
	out->map_used = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
	return SC_OK;
}

int sc_store_copy(sc_store *st, const char *dir)
{
	mode_t old;
	int rc;

	if (st == NULL || dir == NULL)
		return sc_error_set(SC_ERR_INVALID, "sc_store_copy: no store or directory");
	if (st->pg != NULL)
		return sc_error_set(SC_ERR_INVALID,
				    "a PostgreSQL store is backed up by PostgreSQL (pg_dump or a "
				    "base backup with WAL archiving): see docs/operations.md");
	/* The copy is as private as the store: whatever the caller's umask. */
	old = umask(077);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		rc = sc_error_set(SC_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
		umask(old);
		return rc;
	}
	rc = mdb_env_copy2(st->env, dir, MDB_CP_COMPACT);
	umask(old);
	if (rc == EEXIST)
		return sc_error_set(SC_ERR_EXISTS,
				    "%s already holds a store: give an empty "
				    "directory",
				    dir);
	if (rc != 0)
		return sc_error_set(SC_ERR_IO, "copying the store to %s: %s", dir,
				    mdb_strerror(rc));
	if (chmod(dir, 0700) != 0)
		return sc_error_set(SC_ERR_IO, "chmod %s: %s", dir, strerror(errno));
	return SC_OK;
}
