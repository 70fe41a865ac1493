/*
 * Batch enrolment: a reader (the calling thread) parses the CSV, workers
 * do the HSM work (ID hash, key generation and wrapping, certificate
 * signing, binding MAC) in parallel, and one committer writes rows in file
 * order, many per transaction.  A row is written completely (user, key,
 * certificate, audit) or not at all; a crash loses at most the rows of the
 * transaction in flight, and a rerun skips every row already committed
 * (same user id and same ID-card hash), so each row is enrolled exactly once.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "csv.h"
#include "internal.h"
#include "sc_audit.h"
#include "sc_err.h"
#include "sc_util.h"

#define SC_BATCH_RING 8192
#define SC_BATCH_CHUNK 1000
#define SC_BATCH_AHEAD 16 /* rows whose reads are asked for together */
#define SC_BATCH_PRECHECK_REFRESH 2048

enum { SLOT_FREE = 0, SLOT_QUEUED, SLOT_DONE };

struct sc_batch_slot {
	sc_ca_prep p;
	int state;
};

struct sc_batch {
	sc_ca *ca;
	const sc_ca_batch_opts *opts;
	sc_ca_batch_result *res;
	pthread_mutex_t mu;
	pthread_cond_t cv_work, cv_done, cv_space;
	struct sc_batch_slot *ring;
	uint64_t n_read, next_work, n_committed;
	int eof, stop, fatal;
	char fatal_msg[300];
	size_t errors_cap;
	unsigned chunk;
	/* progress */
	uint64_t total_estimate;
	struct timespec t0, last_draw;
};

static double batch_elapsed(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* Record a row error.  The reader and the committer both report, so this
 * takes the lock: call it without holding b->mu. */
static void batch_error(struct sc_batch *b, unsigned long line, const char *user, int err,
			   const char *msg)
{
	sc_ca_batch_result *r = b->res;
	sc_ca_batch_error *e;

	pthread_mutex_lock(&b->mu);
	r->failed++;
	if (r->n_errors == b->errors_cap) {
		size_t ncap = b->errors_cap ? 2 * b->errors_cap : 64;
		sc_ca_batch_error *ne = realloc(r->errors, ncap * sizeof(*ne));

		if (ne == NULL) {
			pthread_mutex_unlock(&b->mu);
			return;
		}
		r->errors = ne;
		b->errors_cap = ncap;
	}
	e = &r->errors[r->n_errors++];
	memset(e, 0, sizeof(*e));
	e->line = line;
	e->err = err;
	snprintf(e->user_id, sizeof(e->user_id), "%s", user ? user : "");
	snprintf(e->msg, sizeof(e->msg), "%s", msg && *msg ? msg : sc_strerror(err));
	pthread_mutex_unlock(&b->mu);
}

static int batch_is_fatal(int err)
{
	return err == SC_ERR_HSM || err == SC_ERR_HSM_MODULE || err == SC_ERR_HSM_PIN ||
	       err == SC_ERR_HSM_LOCKED || err == SC_ERR_NOMEM || err == SC_ERR_STORE ||
	       err == SC_ERR_STORE_FULL || err == SC_ERR_READONLY || err == SC_ERR_IO ||
	       err == SC_ERR_INTERNAL;
}

static void batch_set_fatal(struct sc_batch *b, int err, const char *msg)
{
	/* caller holds b->mu */
	if (!b->fatal) {
		b->fatal = err;
		snprintf(b->fatal_msg, sizeof(b->fatal_msg), "%s", msg);
	}
	b->stop = 1;
	pthread_cond_broadcast(&b->cv_work);
	pthread_cond_broadcast(&b->cv_done);
	pthread_cond_broadcast(&b->cv_space);
}

static void *batch_worker(void *arg)
{
	struct sc_batch *b = arg;

	pthread_mutex_lock(&b->mu);
	for (;;) {
		struct sc_batch_slot *s;
		int rv;

		while (!b->stop && b->next_work == b->n_read && !b->eof)
			pthread_cond_wait(&b->cv_work, &b->mu);
		if (b->stop || b->next_work == b->n_read)
			break;
		s = &b->ring[b->next_work % SC_BATCH_RING];
		b->next_work++;
		pthread_mutex_unlock(&b->mu);
		rv = sc_ca_prepare(b->ca, &s->p);
		if (rv != SC_OK) {
			s->p.err = rv;
			snprintf(s->p.errmsg, sizeof(s->p.errmsg), "%s", sc_error_detail());
			sc_error_clear();
		}
		pthread_mutex_lock(&b->mu);
		s->state = SLOT_DONE;
		pthread_cond_signal(&b->cv_done);
	}
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

static void batch_progress(struct sc_batch *b, int final)
{
	struct timespec now;
	double el, rate, eta;
	uint64_t done = b->res->enrolled + b->res->skipped + b->res->failed;
	uint64_t total = b->total_estimate > done ? b->total_estimate : done;
	int width = 30, fill;

	if (!b->opts->progress)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!final && batch_elapsed(&b->last_draw, &now) < 0.2)
		return;
	b->last_draw = now;
	el = batch_elapsed(&b->t0, &now);
	rate = el > 0 ? (double)done / el : 0;
	eta = rate > 0 ? (double)(total - done) / rate : 0;
	fill = total ? (int)((double)width * (double)done / (double)total) : 0;
	fprintf(stderr, "\r[%.*s%*s] %llu/%llu %3d%% %6.0f rows/s ETA %4.0fs%s",
		fill, "##############################", width - fill, "",
		(unsigned long long)done, (unsigned long long)total,
		total ? (int)(100.0 * (double)done / (double)total) : 100, rate, eta,
		final ? "\n" : "");
	fflush(stderr);
}

static void *batch_committer(void *arg)
{
	struct sc_batch *b = arg;
	sc_ca_batch_result *r = b->res;

	pthread_mutex_lock(&b->mu);
	for (;;) {
		uint64_t k = 0, start;
		sc_txn *txn = NULL;
		int rv;
		uint64_t enrolled = 0, skipped = 0;

		for (;;) {
			k = 0;
			while (b->n_committed + k < b->n_read && k < b->chunk &&
			       b->ring[(b->n_committed + k) % SC_BATCH_RING].state == SLOT_DONE)
				k++;
			if (b->stop || k == b->chunk ||
			    (k > 0 && b->eof && b->n_committed + k == b->n_read))
				break;
			if (b->eof && b->n_committed == b->n_read)
				break;
			pthread_cond_wait(&b->cv_done, &b->mu);
		}
		if (b->stop || k == 0)
			break;
		start = b->n_committed;
		pthread_mutex_unlock(&b->mu);

		rv = sc_txn_begin(b->ca->d->store, SC_TXN_WRITE, &txn);
		if (rv == SC_OK)
			sc_audit_prefetch(txn);
		for (uint64_t i = 0; rv == SC_OK && i < k; i++) {
			sc_ca_prep *p = &b->ring[(start + i) % SC_BATCH_RING].p;
			int already = 0, e;

			/* the reads of the next rows in one round trip on
			 * PostgreSQL, where the write lock is held meanwhile */
			for (uint64_t j = i; i % SC_BATCH_AHEAD == 0 && j < k && j < i + SC_BATCH_AHEAD;
			     j++) {
				const sc_ca_prep *q = &b->ring[(start + j) % SC_BATCH_RING].p;

				if (q->err == SC_OK)
					sc_ca_prep_prefetch(txn, q);
			}

			if (p->err != SC_OK) {
				if (batch_is_fatal(p->err)) {
					rv = p->err;
					sc_error_set(rv, "line %lu: %s", p->line, p->errmsg);
					break;
				}
				batch_error(b, p->line, p->user_id, p->err, p->errmsg);
				continue;
			}
			e = sc_ca_commit_prep(b->ca, txn, p, &already);
			if (e == SC_OK) {
				enrolled++;
			} else if (e == SC_ERR_EXISTS && already) {
				skipped++;
			} else if (e == SC_ERR_EXISTS || e == SC_ERR_INVALID || e == SC_ERR_BUSY) {
				/* SC_ERR_BUSY: a revocation re-wrapped the row's key
				 * group meanwhile; the row is reported, run it again */
				batch_error(b, p->line, p->user_id, e, sc_error_detail());
			} else {
				rv = e;
			}
			sc_error_clear();
		}
		if (rv == SC_OK) {
			rv = sc_txn_commit(txn);
			txn = NULL;
		}
		sc_txn_abort(txn);

		pthread_mutex_lock(&b->mu);
		if (rv != SC_OK) {
			char msg[300];

			snprintf(msg, sizeof(msg), "%s", sc_error_detail());
			batch_set_fatal(b, rv, msg);
			break;
		}
		for (uint64_t i = 0; i < k; i++) {
			struct sc_batch_slot *s = &b->ring[(start + i) % SC_BATCH_RING];

			sc_ca_prep_clear(&s->p);
			s->state = SLOT_FREE;
		}
		r->enrolled += enrolled;
		r->skipped += skipped;
		b->n_committed += k;
		pthread_cond_signal(&b->cv_space);
		batch_progress(b, 0);
	}
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

static int batch_col(char **hdr, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(hdr[i], name) == 0)
			return (int)i;
	return -1;
}

/* Newline count, for the progress estimate only. */
static uint64_t batch_count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	char buf[65536];
	size_t n;
	uint64_t lines = 0;

	if (f == NULL)
		return 0;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		for (size_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	fclose(f);
	return lines > 0 ? lines - 1 : 0;
}

/* Fill a prep from one CSV record; SC_OK or a row error with a detail. */
static int batch_row(char **f, size_t n, const int col[6], sc_ca_prep *p)
{
	const char *uid = f[col[0]], *dob = col[3] >= 0 ? f[col[3]] : "";
	const char *prof = col[4] >= 0 ? f[col[4]] : "", *kt = col[5] >= 0 ? f[col[5]] : "";
	size_t want = 0;

	for (int i = 0; i < 6; i++)
		if (col[i] >= 0 && (size_t)col[i] + 1 > want)
			want = (size_t)col[i] + 1;
	if (n != want)
		return sc_error_set(SC_ERR_INVALID, "%zu fields where the header has %zu", n, want);
	if (strlen(uid) > SC_ID_MAX || !sc_id_valid(uid))
		return sc_error_set(SC_ERR_INVALID, "the user id is not 1-%d characters of "
				    "A-Z a-z 0-9 . _ @ -", SC_ID_MAX);
	snprintf(p->user_id, sizeof(p->user_id), "%s", uid);
	if (f[col[1]][0] == '\0')
		return sc_error_set(SC_ERR_INVALID, "empty name");
	if (f[col[2]][0] == '\0')
		return sc_error_set(SC_ERR_INVALID, "empty ID-card number");
	if (dob[0] != '\0' && sc_date_parse(dob, &p->dob) != SC_OK)
		return sc_error_set(SC_ERR_INVALID, "dob '%.20s' is not YYYY-MM-DD", dob);
	if (strlen(prof) >= sizeof(p->profile) ||
	    (prof[0] != '\0' && strcmp(prof, "adult") != 0 && strcmp(prof, "minor") != 0))
		return sc_error_set(SC_ERR_INVALID, "profile must be adult or minor");
	snprintf(p->profile, sizeof(p->profile), "%s", prof[0] ? prof : "adult");
	if (kt[0] != '\0' && sc_keyalg_parse(kt, &p->alg) != SC_OK)
		return SC_ERR_INVALID;
	p->name = strdup(f[col[1]]);
	p->id_number = OPENSSL_strdup(f[col[2]]);
	if (p->name == NULL || p->id_number == NULL)
		return SC_ERR_NOMEM;
	return SC_OK;
}

int sc_ca_enrol_batch(sc_ca *ca, const char *csv_path, const sc_ca_batch_opts *opts,
		      sc_ca_batch_result *result)
{
	static const char *const names[6] = { "user_id", "name", "id_number", "dob", "profile",
					      "key_type" };
	struct sc_batch b;
	sc_csv *csv = NULL;
	pthread_t *workers = NULL, committer;
	unsigned nthreads, started = 0;
	int committer_started = 0, col[6], have_header = 0, rv;
	sc_txn *rtx = NULL;
	unsigned long rows_since_refresh = 0;
	struct timespec t1;
	long ncpu;

	memset(result, 0, sizeof(*result));
	memset(&b, 0, sizeof(b));
	b.ca = ca;
	b.opts = opts;
	b.res = result;
	b.chunk = opts->chunk ? opts->chunk : SC_BATCH_CHUNK;
	if (b.chunk > SC_BATCH_RING / 2)
		b.chunk = SC_BATCH_RING / 2;
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	nthreads = opts->threads ? opts->threads
		   : (unsigned)(ncpu > 0 ? (ncpu * 2 > 16 ? 16 : ncpu * 2) : 4);
	if ((rv = sc_csv_open(csv_path, &csv)) != SC_OK)
		return rv;
	b.ring = calloc(SC_BATCH_RING, sizeof(*b.ring));
	workers = calloc(nthreads, sizeof(*workers));
	if (b.ring == NULL || workers == NULL) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	if (opts->progress)
		b.total_estimate = batch_count_lines(csv_path);
	pthread_mutex_init(&b.mu, NULL);
	pthread_cond_init(&b.cv_work, NULL);
	pthread_cond_init(&b.cv_done, NULL);
	pthread_cond_init(&b.cv_space, NULL);
	clock_gettime(CLOCK_MONOTONIC, &b.t0);
	for (; started < nthreads; started++)
		if (pthread_create(&workers[started], NULL, batch_worker, &b) != 0)
			break;
	if (started == 0 || pthread_create(&committer, NULL, batch_committer, &b) != 0) {
		pthread_mutex_lock(&b.mu);
		batch_set_fatal(&b, SC_ERR_INTERNAL, "cannot start threads");
		pthread_mutex_unlock(&b.mu);
	} else {
		committer_started = 1;
	}

	for (;;) {
		char **f;
		size_t n;
		unsigned long line;
		sc_ca_prep p;
		sc_user u;
		int r;

		pthread_mutex_lock(&b.mu);
		r = b.stop;
		pthread_mutex_unlock(&b.mu);
		if (r)
			break;
		r = sc_csv_next(csv, &f, &n, &line);
		if (r == 0)
			break;
		if (r == SC_ERR_IO) {
			pthread_mutex_lock(&b.mu);
			batch_set_fatal(&b, r, sc_error_detail());
			pthread_mutex_unlock(&b.mu);
			break;
		}
		if (!have_header) {
			if (r < 0) {
				pthread_mutex_lock(&b.mu);
				batch_set_fatal(&b, SC_ERR_INVALID, "the header line is malformed");
				pthread_mutex_unlock(&b.mu);
				break;
			}
			for (int i = 0; i < 6; i++)
				col[i] = batch_col(f, n, names[i]);
			if (col[0] < 0 || col[1] < 0 || col[2] < 0) {
				pthread_mutex_lock(&b.mu);
				batch_set_fatal(&b, SC_ERR_INVALID, "the header must name at least "
						   "user_id, name and id_number (and may name dob, "
						   "profile, key_type)");
				pthread_mutex_unlock(&b.mu);
				break;
			}
			have_header = 1;
			continue;
		}
		pthread_mutex_lock(&b.mu);
		result->rows++;
		pthread_mutex_unlock(&b.mu);
		if (r < 0) {
			batch_error(&b, line, NULL, r, sc_error_detail());
			sc_error_clear();
			continue;
		}
		memset(&p, 0, sizeof(p));
		p.line = line;
		r = batch_row(f, n, col, &p);
		if (r != SC_OK) {
			batch_error(&b, line, p.user_id, r, sc_error_detail());
			sc_error_clear();
			sc_ca_prep_clear(&p);
			continue;
		}
		/* a user already in the store needs only its ID hash compared (a
		 * rerun after a crash), not a new key */
		if (rtx == NULL || ++rows_since_refresh >= SC_BATCH_PRECHECK_REFRESH) {
			sc_txn_abort(rtx);
			rtx = NULL;
			rows_since_refresh = 0;
			if (sc_txn_begin(ca->d->store, SC_TXN_READ, &rtx) != SC_OK)
				rtx = NULL;
		}
		if (rtx != NULL && sc_store_user_get(rtx, p.user_id, &u) == SC_OK)
			p.hash_only = 1;
		pthread_mutex_lock(&b.mu);
		while (!b.stop && b.n_read - b.n_committed >= SC_BATCH_RING)
			pthread_cond_wait(&b.cv_space, &b.mu);
		if (b.stop) {
			pthread_mutex_unlock(&b.mu);
			sc_ca_prep_clear(&p);
			break;
		}
		b.ring[b.n_read % SC_BATCH_RING].p = p;
		b.ring[b.n_read % SC_BATCH_RING].state = SLOT_QUEUED;
		OPENSSL_cleanse(&p, sizeof(p));
		b.n_read++;
		pthread_cond_signal(&b.cv_work);
		pthread_mutex_unlock(&b.mu);
	}
	sc_txn_abort(rtx);
	pthread_mutex_lock(&b.mu);
	b.eof = 1;
	pthread_cond_broadcast(&b.cv_work);
	pthread_cond_broadcast(&b.cv_done);
	pthread_mutex_unlock(&b.mu);
	for (unsigned i = 0; i < started; i++)
		pthread_join(workers[i], NULL);
	if (committer_started)
		pthread_join(committer, NULL);
	batch_progress(&b, 1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	result->seconds = batch_elapsed(&b.t0, &t1);
	/* rows read but never committed (after a fatal error) */
	for (uint64_t i = b.n_committed; i < b.n_read; i++)
		sc_ca_prep_clear(&b.ring[i % SC_BATCH_RING].p);
	rv = b.fatal ? sc_error_set(b.fatal, "batch stopped: %s (rows committed so far are "
				    "kept; rerun the same file to continue)", b.fatal_msg)
		     : SC_OK;
	if (!have_header && !b.fatal)
		rv = sc_error_set(SC_ERR_INVALID, "%s is empty: no header line", csv_path);
	/* errors in line order */
	for (size_t i = 1; i < result->n_errors; i++) {
		sc_ca_batch_error e = result->errors[i];
		size_t j = i;

		while (j > 0 && result->errors[j - 1].line > e.line) {
			result->errors[j] = result->errors[j - 1];
			j--;
		}
		result->errors[j] = e;
	}
	pthread_mutex_destroy(&b.mu);
	pthread_cond_destroy(&b.cv_work);
	pthread_cond_destroy(&b.cv_done);
	pthread_cond_destroy(&b.cv_space);
out:
	free(workers);
	free(b.ring);
	sc_csv_close(csv);
	return rv;
}

void sc_ca_batch_result_free(sc_ca_batch_result *r)
{
	if (r != NULL) {
		free(r->errors);
		memset(r, 0, sizeof(*r));
	}
}
