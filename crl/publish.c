/*
 * Publishing: one pass over the revocation index builds every partition's
 * entries; full.crl is their merge; deltas come from the revocation log.
 * Files are staged, fsync'd and renamed in only once all are written.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/x509v3.h>

#include "crl_internal.h"
#include "sc_audit.h"
#include "sc_crl.h"
#include "sc_err.h"
#include "sc_signer.h"
#include "sc_util.h"

/* What the store remembers about the last full publish (meta crl.state). */
struct crl_state {
	int valid;
	uint64_t full_number;    /* base of later deltas */
	uint64_t full_seq;       /* revocation-log position it covers */
	int64_t full_time;
	uint32_t partitions;
	uint64_t last_number;    /* last publish of any kind */
	uint64_t last_seq;
	int64_t last_time;
	/* Expiry horizon of the last full publish: certificates that expired
	 * before it are off the CRLs for good, even if the grace period is
	 * raised or the clock steps back later. */
	int64_t drop_before;
};

/* The state line's fields, in the order they are written: one table for
 * both directions, so that what is saved is what is read back. */
static const struct state_field {
	const char *name;
	size_t off;
	size_t size;    /* 4 (uint32_t) or 8 (uint64_t, int64_t) */
} state_fields[] = {
	{ "full", offsetof(struct crl_state, full_number), 8 },
	{ "full_seq", offsetof(struct crl_state, full_seq), 8 },
	{ "full_time", offsetof(struct crl_state, full_time), 8 },
	{ "partitions", offsetof(struct crl_state, partitions), 4 },
	{ "last", offsetof(struct crl_state, last_number), 8 },
	{ "last_seq", offsetof(struct crl_state, last_seq), 8 },
	{ "last_time", offsetof(struct crl_state, last_time), 8 },
	{ "drop_before", offsetof(struct crl_state, drop_before), 8 },
};
#define STATE_NFIELDS (sizeof(state_fields) / sizeof(state_fields[0]))

/* Times are stored as their two's-complement bits, so the int64_t fields
 * go through the same unsigned text as the counters. */
static uint64_t state_get(const struct crl_state *s, const struct state_field *f)
{
	const char *at = (const char *)s + f->off;
	uint64_t v64;
	uint32_t v32;

	if (f->size == 4) {
		memcpy(&v32, at, 4);
		return v32;
	}
	memcpy(&v64, at, 8);
	return v64;
}

static void state_set(struct crl_state *s, const struct state_field *f, uint64_t v)
{
	char *at = (char *)s + f->off;
	uint32_t v32 = (uint32_t)v;

	if (f->size == 4)
		memcpy(at, &v32, 4);
	else
		memcpy(at, &v, 8);
}

static void state_parse(const void *data, size_t len, struct crl_state *s)
{
	char buf[512], *tok, *save = NULL;

	memset(s, 0, sizeof(*s));
	if (len == 0 || len >= sizeof(buf))
		return;
	memcpy(buf, data, len);
	buf[len] = '\0';
	for (tok = strtok_r(buf, " \n", &save); tok != NULL; tok = strtok_r(NULL, " \n", &save)) {
		char *eq = strchr(tok, '='), *end = NULL;
		unsigned long long v;

		if (eq == NULL)
			continue;
		*eq = '\0';
		errno = 0;
		v = strtoull(eq + 1, &end, 10);
		if (errno != 0 || end == eq + 1 || *end != '\0')
			return;
		for (size_t i = 0; i < STATE_NFIELDS; i++) {
			if (strcmp(tok, state_fields[i].name) == 0)
				state_set(s, &state_fields[i], v);
		}
	}
	s->valid = s->full_number > 0 && s->partitions > 0;
}

static int state_load(sc_txn *txn, struct crl_state *s)
{
	const void *data = NULL;
	size_t len = 0;
	int rv;

	memset(s, 0, sizeof(*s));
	rv = sc_store_meta_find(txn, SC_CRL_META_STATE, &data, &len, NULL);
	if (rv != SC_OK)
		return rv;
	state_parse(data, len, s);
	return SC_OK;
}

static int state_save(sc_txn *txn, const struct crl_state *s)
{
	struct crl_state w = *s;
	char buf[512];
	size_t used = 0;

	if (w.drop_before < 0)
		w.drop_before = 0;
	for (size_t i = 0; i < STATE_NFIELDS; i++) {
		int n = snprintf(buf + used, sizeof(buf) - used, "%s%s=%" PRIu64, i > 0 ? " " : "",
				 state_fields[i].name, state_get(&w, &state_fields[i]));

		if (n < 0 || (size_t)n >= sizeof(buf) - used - 1)
			return sc_error_set(SC_ERR_INTERNAL, "CRL state record too long");
		used += (size_t)n;
	}
	buf[used++] = '\n';
	return sc_store_meta_put(txn, SC_CRL_META_STATE, buf, used);
}

/* ---- the one pass over the revocation index ---------------------------- */

struct full_ctx {
	sc_crl_list *parts;
	uint32_t nparts;
	int64_t drop_before;     /* not_after earlier than this: off the CRL */
	int rv;
};

static int full_cb(void *vctx, const sc_revoked *r)
{
	struct full_ctx *c = vctx;
	int reason;

	if (r->partition >= c->nparts) {
		char hex[2 * SC_SERIAL_MAX + 1];

		sc_serial_hex(&r->serial, hex);
		c->rv = sc_error_set(SC_ERR_STORE, "revocation record %s names CRL partition %"
				     PRIu32 " but crl.partitions is %" PRIu32 "; the partition "
				     "count is fixed for the CA's life (docs/crl.md)",
				     hex, r->partition, c->nparts);
		return 1;
	}
	/* Expired past the grace period: dropped (RFC 5280 §3.3 allows it);
	 * time only moves forward, so such an entry never comes back. */
	if (r->not_after < c->drop_before)
		return 0;
	if (r->status == SC_CERT_HOLD)
		reason = SC_REASON_CERTIFICATE_HOLD;
	else if (r->status == SC_CERT_REVOKED)
		reason = r->reason == SC_REASON_REMOVE_FROM_CRL ? SC_REASON_NONE : r->reason;
	else
		return 0;
	sc_crl_list_add(&c->parts[r->partition], &r->serial, r->revoked_at, reason,
			r->status == SC_CERT_HOLD ? 0 : r->invalidity_date);
	if (c->parts[r->partition].buf.failed) {
		c->rv = sc_der_ok(&c->parts[r->partition].buf);
		return 1;
	}
	return 0;
}

/* ---- the revocation log since the base ---------------------------------- */

struct ev {
	sc_serial serial;
	uint32_t partition;
	int status;
	int reason;
	int64_t at;
	int64_t invalidity;
	uint64_t seq;
};

struct log_ctx {
	struct ev *v;
	size_t n, cap;
	int collect;
	sc_crl_loghead lh;
	uint32_t nparts;
	int rv;
};

void sc_crl_loghead_note(sc_crl_loghead *h, const sc_revlog *e)
{
	if (e->rev_seq > h->head)
		h->head = e->rev_seq;
	if (e->status == SC_CERT_REVOKED && e->reason == SC_REASON_KEY_COMPROMISE)
		h->key_compromise = 1;
}

static int log_cb(void *vctx, const sc_revlog *e)
{
	struct log_ctx *c = vctx;

	sc_crl_loghead_note(&c->lh, e);
	if (!c->collect)
		return 0;
	if (e->partition >= c->nparts) {
		c->rv = sc_error_set(SC_ERR_STORE, "revocation log event %" PRIu64 " names CRL "
				     "partition %" PRIu32 " but crl.partitions is %" PRIu32,
				     e->rev_seq, e->partition, c->nparts);
		return 1;
	}
	if (c->n == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 1024;
		struct ev *nv = realloc(c->v, ncap * sizeof(*nv));

		if (nv == NULL) {
			c->rv = sc_error_set(SC_ERR_NOMEM, "out of memory reading the revocation log");
			return 1;
		}
		c->v = nv;
		c->cap = ncap;
	}
	c->v[c->n].serial = e->serial;
	c->v[c->n].partition = e->partition;
	c->v[c->n].status = e->status;
	c->v[c->n].reason = e->reason;
	c->v[c->n].at = e->at;
	c->v[c->n].invalidity = e->invalidity_date;
	c->v[c->n].seq = e->rev_seq;
	c->n++;
	return 0;
}

static int ev_cmp(const void *a, const void *b)
{
	const struct ev *x = a, *y = b;
	int c = sc_crl_serial_cmp(x->serial.b, x->serial.len, y->serial.b, y->serial.len);

	if (c != 0)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Whether a serial was on the base CRL, from its first event since then:
 * only a held certificate can be resumed, or expire with its hold kept
 * (a certificate that was good expires with no reason). */
static int ev_was_listed(const struct ev *first)
{
	return first->status == SC_CERT_GOOD ||
	       (first->status == SC_CERT_EXPIRED && first->reason == SC_REASON_CERTIFICATE_HOLD);
}

/* Delta entries: the latest state of every serial that changed since the
 * base.  Revoked/held: listed as on a full CRL; released from hold or
 * expired while held: removeFromCRL (RFC 5280 §5.3.1), but only for a
 * serial the base lists; one it does not (an ordinary expiry, a hold
 * and its release both since the base) has nothing to remove. */
static int delta_lists(struct log_ctx *lc, sc_crl_list *parts)
{
	size_t i, first = 0;

	if (lc->n > 1)        /* lc->v is NULL when nothing changed */
		qsort(lc->v, lc->n, sizeof(*lc->v), ev_cmp);
	for (i = 0; i < lc->n; i++) {
		const struct ev *e = &lc->v[i];
		sc_crl_list *l = &parts[e->partition];

		if (i > 0 && sc_crl_serial_cmp(e->serial.b, e->serial.len, lc->v[i - 1].serial.b,
					       lc->v[i - 1].serial.len) != 0)
			first = i;
		if (i + 1 < lc->n && sc_crl_serial_cmp(e->serial.b, e->serial.len,
						       lc->v[i + 1].serial.b,
						       lc->v[i + 1].serial.len) == 0)
			continue;
		if (e->status == SC_CERT_REVOKED)
			sc_crl_list_add(l, &e->serial, e->at,
					e->reason == SC_REASON_REMOVE_FROM_CRL ? SC_REASON_NONE
										: e->reason,
					e->invalidity);
		else if (e->status == SC_CERT_HOLD)
			sc_crl_list_add(l, &e->serial, e->at, SC_REASON_CERTIFICATE_HOLD, 0);
		else if (ev_was_listed(&lc->v[first]))
			sc_crl_list_add(l, &e->serial, e->at, SC_REASON_REMOVE_FROM_CRL, 0);
		else
			continue;
		if (l->buf.failed)
			return sc_der_ok(&l->buf);
	}
	return SC_OK;
}

/* ---- files --------------------------------------------------------------- */

struct staged {
	char *tmp;
	char *path;
	int fd;                  /* open until synced in commit_all() */
};

/* Who signs a CRL: a CA key in the HSM and the facts of its certificate. */
struct crl_signer {
	sc_hsm_key *key;
	int md;
	unsigned char *algid;
	size_t algid_len;
	unsigned char *issuer;
	size_t issuer_len;
	unsigned char keyid[64];
	size_t keyid_len;
};

struct pub {
	sc_deploy *d;
	struct crl_signer ca;    /* the issuing CA: every CRL of its certificates */
	struct crl_signer root;  /* the root: its ARL (root.crl) */
	const char *base_url;
	char *out_dir;
	int pem;
	struct staged *st;
	size_t nst, capst;
	size_t renamed;          /* staged files already renamed into place */
	size_t bytes;
	sc_der tbs;              /* reused for every CRL: faulted in once */
};

/* A failed write, sync or close in the CRL directory.  A full disk gets its
 * own code (exit 7 like a full store) and says what to do. */
static int file_err(int e, const char *what, const char *path)
{
	if (e == ENOSPC || e == EDQUOT)
		return sc_error_set(SC_ERR_STORE_FULL, "cannot %s %s: %s; the disk holding the CRL "
				    "directory is full: free disk space there (crl.out_dir or --out) "
				    "and publish again", what, path, strerror(e));
	return sc_error_set(SC_ERR_IO, "cannot %s %s: %s", what, path, strerror(e));
}

/* Write a staging file and leave it open: the fsyncs of all staged files
 * happen together in commit_all(), which lets the file system batch them
 * into one journal commit. */
static int write_staged(const char *path, const unsigned char *p, size_t len, int *fd_out)
{
	int fd, rv = SC_OK;
	size_t off = 0;

	*fd_out = -1;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 && (errno == ENOSPC || errno == EDQUOT))
		return file_err(errno, "create", path);
	if (fd < 0)
		return sc_error_set(errno == EACCES || errno == EROFS ? SC_ERR_READONLY : SC_ERR_IO,
				    "cannot create %s: %s; make the CRL directory writable "
				    "(crl.out_dir or --out)", path, strerror(errno));
	while (off < len) {
		ssize_t w = write(fd, p + off, len - off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			rv = file_err(errno, "write", path);
			close(fd);
			return rv;
		}
		off += (size_t)w;
	}
	*fd_out = fd;
	return SC_OK;
}

static char *path_join(const char *dir, const char *prefix, const char *name,
		       const char *suffix)
{
	size_t n = strlen(dir) + strlen(prefix) + strlen(name) + strlen(suffix) + 2;
	char *p = malloc(n);

	if (p != NULL)
		snprintf(p, n, "%s/%s%s%s", dir, prefix, name, suffix);
	return p;
}

static int stage(struct pub *p, const char *name, const unsigned char *data, size_t len)
{
	struct staged s = { NULL, NULL, -1 };
	int rv;

	if (p->nst == p->capst) {
		size_t ncap = p->capst ? p->capst * 2 : 64;
		struct staged *nv = realloc(p->st, ncap * sizeof(*nv));

		if (nv == NULL)
			return sc_error_set(SC_ERR_NOMEM, "out of memory");
		p->st = nv;
		p->capst = ncap;
	}
	/* Hidden staging name in the same directory: rename() is atomic. */
	s.path = path_join(p->out_dir, "", name, "");
	s.tmp = path_join(p->out_dir, ".", name, ".new");
	if (s.path == NULL || s.tmp == NULL) {
		free(s.path);
		free(s.tmp);
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	}
	rv = write_staged(s.tmp, data, len, &s.fd);
	/* Bounded number of open files: past a couple of hundred (very many
	 * partitions), sync each file at once instead. */
	if (rv == SC_OK && p->nst >= 200) {
		if (fsync(s.fd) != 0)
			rv = file_err(errno, "sync", s.tmp);
		if (close(s.fd) != 0 && rv == SC_OK)
			rv = file_err(errno, "close", s.tmp);
		s.fd = -1;
	}
	p->st[p->nst++] = s;     /* recorded even on failure so it is removed */
	if (rv == SC_OK)
		p->bytes += len;
	return rv;
}

static int stage_pem(struct pub *p, const char *name, const unsigned char *der, size_t len)
{
	char *b64 = NULL, pname[64];
	unsigned char *pem = NULL;
	size_t bl, i, n = 0, cap;
	int rv;

	snprintf(pname, sizeof(pname), "%.*s.pem", (int)(strlen(name) - 4), name);
	if ((rv = sc_b64_encode(der, len, &b64)) != SC_OK)
		return rv;
	bl = strlen(b64);
	cap = bl + bl / 64 + 64;
	pem = malloc(cap);
	if (pem == NULL) {
		free(b64);
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	}
	memcpy(pem, "-----BEGIN X509 CRL-----\n", 25);
	n = 25;
	for (i = 0; i < bl; i += 64) {
		size_t k = bl - i < 64 ? bl - i : 64;

		memcpy(pem + n, b64 + i, k);
		n += k;
		pem[n++] = '\n';
	}
	memcpy(pem + n, "-----END X509 CRL-----\n", 23);
	n += 23;
	rv = stage(p, pname, pem, n);
	free(pem);
	free(b64);
	return rv;
}

static void unstage_all(struct pub *p)
{
	for (size_t i = 0; i < p->nst; i++) {
		if (p->st[i].fd >= 0)
			close(p->st[i].fd);
		if (p->st[i].tmp != NULL)
			unlink(p->st[i].tmp);
		free(p->st[i].tmp);
		free(p->st[i].path);
	}
	free(p->st);
	p->st = NULL;
	p->nst = p->capst = 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rv = SC_OK;

	if (fd < 0)
		return sc_error_set(SC_ERR_IO, "cannot open %s: %s", dir, strerror(errno));
	if (fsync(fd) != 0)
		rv = sc_error_set(SC_ERR_IO, "cannot sync %s: %s", dir, strerror(errno));
	close(fd);
	return rv;
}

static int commit_all(struct pub *p)
{
	/* Tests widen the rename window to kill a publish inside it. */
	const char *delay = getenv("SMARTCERT_TEST_CRL_RENAME_DELAY_MS");
	long delay_ms = delay != NULL ? strtol(delay, NULL, 10) : 0;
	size_t i;

	/* Every file's data on disk before any of them becomes visible. */
	for (i = 0; i < p->nst; i++) {
		int rc;

		if (p->st[i].fd < 0)
			continue;
		rc = fsync(p->st[i].fd);
		if (rc != 0)
			return file_err(errno, "sync", p->st[i].tmp);
		rc = close(p->st[i].fd);
		p->st[i].fd = -1;
		if (rc != 0)
			return file_err(errno, "close", p->st[i].tmp);
	}
	for (i = 0; i < p->nst; i++) {
		if (delay_ms > 0 && delay_ms < 10000) {
			struct timespec ts = { delay_ms / 1000, (delay_ms % 1000) * 1000000L };

			nanosleep(&ts, NULL);
		}
		if (rename(p->st[i].tmp, p->st[i].path) != 0)
			return file_err(errno, "rename into place", p->st[i].tmp);
		free(p->st[i].tmp);
		p->st[i].tmp = NULL;
		p->renamed++;
	}
	return fsync_dir(p->out_dir);
}

/* Encode, sign and stage one CRL. */
static int emit(struct pub *p, const struct crl_signer *sg, const char *name,
		const sc_crl_tbs *t, sc_crl_list *const *lists, size_t n, size_t *count)
{
	unsigned char *crl = NULL;
	size_t crl_len = 0;
	int rv;

	/* One TBS buffer for all CRLs of the publish: the peak stays at the
	 * entries once + the largest TBS + one signed CRL, and its pages are
	 * faulted in once instead of once per CRL. */
	p->tbs.len = 0;
	p->tbs.failed = 0;
	rv = sc_crl_tbs_encode(t, lists, n, &p->tbs, count);
	if (rv != SC_OK)
		goto out;
	rv = sc_sign_tbs(p->d->hsm, sg->key, sg->md, p->tbs.p, p->tbs.len, NULL, 0, &crl, &crl_len);
	if (rv != SC_OK)
		goto out;
	rv = stage(p, name, crl, crl_len);
	if (rv == SC_OK && p->pem)
		rv = stage_pem(p, name, crl, crl_len);
out:
	free(crl);
	return rv;
}

static int url_of(const struct pub *p, const char *name, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s", p->base_url, name);

	if (n < 0 || (size_t)n >= len)
		return sc_error_set(SC_ERR_CONFIG, "crl.base_url is too long");
	return SC_OK;
}

static int build_exts(const struct pub *p, const struct crl_signer *sg, sc_der *exts,
		      uint64_t number, int delta, uint64_t base, const char *idp_name,
		      int idp_only, const char *fresh_name)
{
	char uri[1024];
	int rv;

	sc_der_init(exts);
	sc_crl_ext_aki(exts, sg->keyid, sg->keyid_len);
	sc_crl_ext_number(exts, number);
	if (delta)
		sc_crl_ext_delta(exts, base);
	if (idp_name != NULL) {
		if ((rv = url_of(p, idp_name, uri, sizeof(uri))) != SC_OK)
			return rv;
		sc_crl_ext_idp(exts, uri, idp_only);
	}
	if (fresh_name != NULL) {
		if ((rv = url_of(p, fresh_name, uri, sizeof(uri))) != SC_OK)
			return rv;
		sc_crl_ext_freshest(exts, uri);
	}
	return sc_der_ok(exts);
}

static void tbs_of(sc_crl_tbs *t, const struct crl_signer *sg, int64_t this_update,
		   int64_t next_update, const sc_der *exts)
{
	t->algid = sg->algid;
	t->algid_len = sg->algid_len;
	t->issuer = sg->issuer;
	t->issuer_len = sg->issuer_len;
	t->this_update = this_update;
	t->next_update = next_update;
	t->exts = exts;
}

/* One CRL scope: all partitions (partition == UINT32_MAX, no IDP) or one. */
static int emit_scope(struct pub *p, uint32_t partition, int delta, uint64_t number,
		      uint64_t base, int64_t this_update, int64_t next_update,
		      sc_crl_list *parts, uint32_t nparts, size_t *count)
{
	char name[64], full_name[64], delta_name[64];
	sc_crl_list **lists = NULL;
	sc_crl_tbs t;
	sc_der exts;
	size_t n;
	int rv;

	if (partition == UINT32_MAX) {
		snprintf(full_name, sizeof(full_name), "%s", SC_CRL_FULL_NAME);
		snprintf(delta_name, sizeof(delta_name), "%s", SC_CRL_FULL_DELTA_NAME);
	} else {
		sc_crl_part_name(partition, 0, full_name, sizeof(full_name));
		sc_crl_part_name(partition, 1, delta_name, sizeof(delta_name));
	}
	snprintf(name, sizeof(name), "%s", delta ? delta_name : full_name);
	/* full.crl covers every certificate of the issuer, so it carries no
	 * IDP: a relying party may then use it for any certificate.  A
	 * partition CRL (and its delta, RFC 5280 §5.2.4: same scope) names the
	 * distribution point the certificates carry. */
	rv = build_exts(p, &p->ca, &exts, number, delta, base,
			partition == UINT32_MAX ? NULL : full_name, SC_CRL_ONLY_USER,
			delta ? NULL : delta_name);
	if (rv != SC_OK)
		goto out;
	if (partition == UINT32_MAX) {
		lists = calloc(nparts, sizeof(*lists));
		if (lists == NULL) {
			rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (n = 0; n < nparts; n++)
			lists[n] = &parts[n];
		n = nparts;
	} else {
		lists = calloc(1, sizeof(*lists));
		if (lists == NULL) {
			rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
			goto out;
		}
		lists[0] = &parts[partition];
		n = 1;
	}
	tbs_of(&t, &p->ca, this_update, next_update, &exts);
	rv = emit(p, &p->ca, name, &t, lists, n, count);
out:
	free(lists);
	sc_der_free(&exts);
	return rv;
}

static void lists_free(sc_crl_list *v, uint32_t n)
{
	if (v == NULL)
		return;
	for (uint32_t i = 0; i < n; i++)
		sc_crl_list_free(&v[i]);
	free(v);
}

static sc_crl_list *lists_new(uint32_t n)
{
	sc_crl_list *v = calloc(n, sizeof(*v));

	if (v != NULL)
		for (uint32_t i = 0; i < n; i++)
			sc_crl_list_init(&v[i]);
	return v;
}

static int issuer_facts(X509 *ca, struct crl_signer *sg)
{
	const ASN1_OCTET_STRING *ski;
	unsigned int mdlen = 0;
	int len;

	len = i2d_X509_NAME(X509_get_subject_name(ca), &sg->issuer);
	if (len <= 0)
		return sc_error_set_openssl(SC_ERR_CRYPTO, "cannot encode the issuer name");
	sg->issuer_len = (size_t)len;
	ski = X509_get0_subject_key_id(ca);
	if (ski != NULL && ASN1_STRING_length(ski) > 0 &&
	    (size_t)ASN1_STRING_length(ski) <= sizeof(sg->keyid)) {
		sg->keyid_len = (size_t)ASN1_STRING_length(ski);
		memcpy(sg->keyid, ASN1_STRING_get0_data(ski), sg->keyid_len);
		return SC_OK;
	}
	/* No SKI in the CA certificate: RFC 5280 §4.2.1.2 method (1). */
	if (!X509_pubkey_digest(ca, EVP_sha1(), sg->keyid, &mdlen))
		return sc_error_set_openssl(SC_ERR_CRYPTO, "cannot hash the CA public key");
	sg->keyid_len = mdlen;
	return SC_OK;
}

/* The signer of `cert`, whose key is the token object `label`. */
static int signer_open(sc_deploy *d, const char *label, const char *what, X509 *cert,
		       struct crl_signer *sg)
{
	int rv = sc_hsm_find_token_key(d->hsm, label, &sg->key);

	if (rv != SC_OK) {
		if (rv == SC_ERR_NOT_FOUND)
			sc_error_set(rv, "the %s key '%s' is not on the backend token; check "
				     "hsm.token", what, label);
		return rv;
	}
	sg->md = sc_sign_default_md(sc_hsm_key_alg(sg->key));
	if ((rv = sc_sign_algor_der(sc_hsm_key_alg(sg->key), sg->md, &sg->algid,
				    &sg->algid_len)) != SC_OK)
		return rv;
	return issuer_facts(cert, sg);
}

static void signer_close(sc_deploy *d, struct crl_signer *sg)
{
	if (sg->key != NULL)
		sc_hsm_key_free(d->hsm, sg->key);
	free(sg->algid);
	OPENSSL_free(sg->issuer);
	memset(sg, 0, sizeof(*sg));
}

/* The root's CRL (an ARL: the root issues CA certificates only), signed
 * with the root key in the HSM and numbered with the same counter.  It
 * carries no issuingDistributionPoint: it is complete for everything the
 * root issued, so it also serves relying parties that check the root
 * itself (OpenSSL's -crl_check_all does; a CRL naming a distribution point
 * is "a different CRL scope" for a root without one).  It lists the CA
 * certificates the root issued that are revoked: none, as long as
 * `ca revoke` refuses CA certificates (a compromised issuing CA means a new
 * CA generation).  Published with every full set so that it never goes
 * stale. */
static int emit_root(struct pub *p, uint64_t number, int64_t this_update, int64_t next_update)
{
	sc_crl_list none;
	sc_crl_list *lists[1] = { &none };
	sc_crl_tbs t;
	sc_der exts;
	size_t count = 0;
	int rv;

	sc_crl_list_init(&none);
	rv = build_exts(p, &p->root, &exts, number, 0, 0, NULL, 0, NULL);
	if (rv == SC_OK) {
		tbs_of(&t, &p->root, this_update, next_update, &exts);
		rv = emit(p, &p->root, SC_CRL_ROOT_NAME, &t, lists, 1, &count);
	}
	sc_der_free(&exts);
	sc_crl_list_free(&none);
	return rv;
}

static int cfg_hours(const sc_config *cfg, const char *key, int64_t def, int64_t *out)
{
	int rv = sc_config_int(cfg, key, def, out);

	if (rv != SC_OK)
		return rv;
	if (*out < 1 || *out > 24 * 366)
		return sc_error_set(SC_ERR_CONFIG, "%s must be between 1 and 8784 hours", key);
	return SC_OK;
}

int sc_crl_publish(sc_deploy *d, const sc_crl_publish_opts *o, sc_crl_publish_result *res)
{
	struct pub p;
	struct crl_state prev, next;
	struct log_ctx lc;
	struct full_ctx fc;
	sc_crl_list *full = NULL, *dl = NULL;
	sc_txn *txn = NULL;
	char *lock_path = NULL;
	int lock_fd = -1, do_full, do_parts, rv = SC_ERR_INTERNAL;
	unsigned char *touched = NULL;
	int64_t now, nu_h, dnu_h, grace_d, this_u, next_u, dnext_u;
	uint64_t number = 0, base;
	uint32_t np, i;
	size_t cnt = 0;
	char detail[224];
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	memset(&p, 0, sizeof(p));
	sc_der_init(&p.tbs);
	memset(&lc, 0, sizeof(lc));
	memset(res, 0, sizeof(*res));
	if (d == NULL || o == NULL)
		return sc_error_set(SC_ERR_INVALID, "no deployment");
	if (d->hsm == NULL)
		return sc_error_set(SC_ERR_INVALID, "publishing CRLs needs the HSM");
	if (d->issuing_cert == NULL)
		return sc_error_set(SC_ERR_NOT_FOUND, "no issuing CA certificate in the store; "
				    "run 'smartcert init' first");
	np = d->crl_partitions;
	if (np == 0 || np > 65536)
		return sc_error_set(SC_ERR_CONFIG, "crl.partitions must be between 1 and 65536");
	p.d = d;
	p.pem = o->pem;
	p.base_url = sc_config_str(d->cfg, "crl.base_url", "http://127.0.0.1:8080/crl");
	if ((rv = cfg_hours(d->cfg, "crl.next_update_hours", 24, &nu_h)) != SC_OK ||
	    (rv = cfg_hours(d->cfg, "crl.delta_next_update_hours", 6, &dnu_h)) != SC_OK)
		goto out;
	if ((rv = sc_config_int(d->cfg, "crl.expired_grace_days", 30, &grace_d)) != SC_OK)
		goto out;
	if (grace_d < 0 || grace_d > 36500) {
		rv = sc_error_set(SC_ERR_CONFIG, "crl.expired_grace_days must be 0..36500");
		goto out;
	}
	if (o->out_dir != NULL)
		p.out_dir = strdup(o->out_dir);
	else
		p.out_dir = sc_config_path(d->cfg, "crl.out_dir", "crl");
	if (p.out_dir == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	now = o->now != 0 ? o->now : sc_now();

	/* Output directory and lock first: an unusable directory must not
	 * consume a CRL number or touch the HSM. */
	if ((rv = sc_mkdir_p(p.out_dir, 0755)) != SC_OK)
		goto out;
	lock_path = path_join(p.out_dir, "", ".publish.lock", "");
	if (lock_path == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lock_fd < 0 && (errno == ENOSPC || errno == EDQUOT)) {
		rv = file_err(errno, "create", lock_path);
		goto out;
	}
	if (lock_fd < 0) {
		rv = sc_error_set(errno == EACCES || errno == EROFS ? SC_ERR_READONLY : SC_ERR_IO,
				  "cannot create %s: %s; make the CRL directory writable "
				  "(crl.out_dir or --out)", lock_path, strerror(errno));
		goto out;
	}
	while (flock(lock_fd, LOCK_EX) != 0) {
		if (errno != EINTR) {
			rv = sc_error_set(SC_ERR_IO, "cannot lock %s: %s", lock_path,
					  strerror(errno));
			goto out;
		}
	}

	if ((rv = signer_open(d, SC_LABEL_ISSUING_CA, "issuing-CA", d->issuing_cert,
			      &p.ca)) != SC_OK)
		goto out;
	if (o->mode == SC_CRL_MODE_FULL && d->root_cert != NULL &&
	    (rv = signer_open(d, SC_LABEL_ROOT_CA, "root-CA", d->root_cert, &p.root)) != SC_OK)
		goto out;

	/* The number is committed before anything is signed, so that no crash
	 * can ever lead to a number being issued twice. */
	if ((rv = sc_txn_begin(d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		goto out;
	if ((rv = sc_store_counter_next(txn, SC_CRL_COUNTER, &number)) != SC_OK)
		goto out;
	rv = sc_txn_commit(txn);
	txn = NULL;
	if (rv != SC_OK)
		goto out;

	/* One read snapshot for the index and the log: the full CRLs and the
	 * deltas published together describe the same instant. */
	if ((rv = sc_txn_begin(d->store, SC_TXN_READ, &txn)) != SC_OK)
		goto out;
	if ((rv = state_load(txn, &prev)) != SC_OK)
		goto out;
	if (prev.valid && prev.partitions != np) {
		rv = sc_error_set(SC_ERR_CONFIG, "crl.partitions is %" PRIu32 " but the CRLs were "
				  "published with %" PRIu32 " partitions; the count is fixed for the "
				  "CA's life (see docs/crl.md, 'Growing')", np, prev.partitions);
		goto out;
	}
	do_full = o->mode == SC_CRL_MODE_FULL || !prev.valid;
	do_parts = !do_full && o->mode == SC_CRL_MODE_DELTA_PARTS;
	lc.nparts = np;
	lc.collect = prev.valid;
	lc.lh.head = prev.valid ? prev.full_seq : 0;
	/* With no publish before, nothing of the log is listed: only where it
	 * ends is needed (a walk would look up every event's certificate, one
	 * round trip each on PostgreSQL). */
	if (!prev.valid)
		rv = sc_store_revlog_last(txn, &lc.lh.head);
	else
		rv = sc_store_revlog_iter(txn, prev.full_seq, log_cb, &lc);
	if (rv != SC_OK)
		goto out;
	if (lc.rv != SC_OK) {
		rv = lc.rv;
		goto out;
	}
	if (do_full) {
		full = lists_new(np);
		if (full == NULL) {
			rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
			goto out;
		}
		fc.parts = full;
		fc.nparts = np;
		fc.drop_before = now - grace_d * 86400;
		if (fc.drop_before < prev.drop_before)
			fc.drop_before = prev.drop_before;
		fc.rv = SC_OK;
		if ((rv = sc_store_revoked_iter(txn, UINT32_MAX, full_cb, &fc)) != SC_OK)
			goto out;
		if (fc.rv != SC_OK) {
			rv = fc.rv;
			goto out;
		}
		for (i = 0; i < np; i++)
			if ((rv = sc_crl_list_finish(&full[i])) != SC_OK)
				goto out;
	} else if (do_parts) {
		/* The full CRL of each partition with a change since the last
		 * publish: a relying party that ignores deltas (Java) sees the
		 * change within the batch.  The drop horizon stays the last full
		 * publish's, so no entry can come back later. */
		full = lists_new(np);
		touched = calloc(np, 1);
		if (full == NULL || touched == NULL) {
			rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (size_t k = 0; k < lc.n; k++)
			if (lc.v[k].seq > prev.last_seq)
				touched[lc.v[k].partition] = 1;
		fc.parts = full;
		fc.nparts = np;
		fc.drop_before = prev.drop_before;
		fc.rv = SC_OK;
		for (i = 0; i < np; i++) {
			if (!touched[i])
				continue;
			if ((rv = sc_store_revoked_iter(txn, i, full_cb, &fc)) != SC_OK)
				goto out;
			if (fc.rv != SC_OK) {
				rv = fc.rv;
				goto out;
			}
			if ((rv = sc_crl_list_finish(&full[i])) != SC_OK)
				goto out;
		}
	}
	sc_txn_abort(txn);
	txn = NULL;

	dl = lists_new(np);
	if (dl == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (prev.valid) {
		base = prev.full_number;
		if ((rv = delta_lists(&lc, dl)) != SC_OK)
			goto out;
	} else {
		base = number;   /* first publish: the delta is empty, its base itself */
	}
	for (i = 0; i < np; i++)
		if ((rv = sc_crl_list_finish(&dl[i])) != SC_OK)
			goto out;

	this_u = now;
	next_u = now + nu_h * 3600;
	dnext_u = now + dnu_h * 3600;
	/* Deltas are staged (and renamed) first: a reader who picks up a new
	 * full CRL with an old delta just ignores the older-numbered delta. */
	for (i = 0; i < np; i++)
		if ((rv = emit_scope(&p, i, 1, number, base, this_u, dnext_u, dl, np, &cnt)) != SC_OK)
			goto out;
	if ((rv = emit_scope(&p, UINT32_MAX, 1, number, base, this_u, dnext_u, dl, np,
			     &res->delta_entries)) != SC_OK)
		goto out;
	lists_free(dl, np);
	dl = NULL;
	if (do_full) {
		for (i = 0; i < np; i++)
			if ((rv = emit_scope(&p, i, 0, number, 0, this_u, next_u, full, np,
					     &cnt)) != SC_OK)
				goto out;
		if ((rv = emit_scope(&p, UINT32_MAX, 0, number, 0, this_u, next_u, full, np,
				     &res->entries)) != SC_OK)
			goto out;
		if (p.root.key != NULL && (rv = emit_root(&p, number, this_u, next_u)) != SC_OK)
			goto out;
	} else if (do_parts) {
		for (i = 0; i < np; i++) {
			if (!touched[i])
				continue;
			if ((rv = emit_scope(&p, i, 0, number, 0, this_u, next_u, full, np,
					     &cnt)) != SC_OK)
				goto out;
			res->partitions_full++;
		}
	}
	lists_free(full, np);
	full = NULL;
	if ((rv = commit_all(&p)) != SC_OK)
		goto out;

	next = prev;
	if (do_full) {
		next.full_number = number;
		next.full_seq = lc.lh.head;
		next.full_time = this_u;
		next.partitions = np;
		next.drop_before = fc.drop_before;
	}
	next.last_number = number;
	next.last_seq = lc.lh.head;
	next.last_time = this_u;
	snprintf(detail, sizeof(detail), "number=%" PRIu64 " %s base=%" PRIu64 " entries=%zu "
		 "delta_entries=%zu partitions_full=%zu rev_seq=%" PRIu64, number,
		 do_full ? "full" : "delta", base, res->entries, res->delta_entries,
		 res->partitions_full, lc.lh.head);
	if ((rv = sc_txn_begin(d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		goto out;
	if ((rv = state_save(txn, &next)) != SC_OK)
		goto out;
	{
		sc_audit_event ev;

		memset(&ev, 0, sizeof(ev));
		ev.kind = "crl-publish";
		ev.actor = o->actor != NULL ? o->actor : "crl";
		ev.outcome = "ok";
		ev.detail = detail;
		if ((rv = sc_audit_append(txn, &ev, NULL)) != SC_OK)
			goto out;
	}
	rv = sc_txn_commit(txn);
	txn = NULL;
	if (rv != SC_OK)
		goto out;

	res->number = number;
	res->base_number = base;
	res->full = do_full;
	res->rev_seq = lc.lh.head;
	res->files = p.nst;
	res->bytes = p.bytes;
	res->this_update = this_u;
	res->next_update = do_full ? next_u : dnext_u;
	res->delta_next_update = dnext_u;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	res->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	rv = SC_OK;
out:
	if (rv != SC_OK && p.renamed > 0) {
		/* The new files are in place (each a complete CRL): say so, and
		 * that the store does not know about them. */
		res->number = number;
		res->files = p.renamed;
		sc_error_set(rv, "the new CRLs (number %" PRIu64 ", %zu of %zu files) are published "
			     "in %s, but the publish was not recorded in the store: %s; once that "
			     "is fixed, run 'smartcert crl publish' again", number, p.renamed, p.nst,
			     p.out_dir, sc_error_detail());
	}
	sc_txn_abort(txn);
	unstage_all(&p);
	sc_der_free(&p.tbs);
	lists_free(full, np);
	lists_free(dl, np);
	free(touched);
	free(lc.v);
	signer_close(d, &p.ca);
	signer_close(d, &p.root);
	free(p.out_dir);
	if (lock_fd >= 0)
		close(lock_fd);     /* releases the lock */
	free(lock_path);
	return rv;
}
