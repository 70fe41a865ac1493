/*
 * The HTTP front end of the responder on libmicrohttpd: OCSP over POST and
 * RFC 5019 GET, /healthz, /metrics, and optionally the published CRLs
 * (/crl/NAME) and CA certificates (/ca/NAME) so one daemon covers the AIA
 * and CDP URLs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"
#include "sc_ocsp.h"
#include "ocsp_cpu.h"
#include "ocsp_guard.h"

#define SC_OCSP_HTTP_MAX_BODY (16u * 1024u)
/* Base64 of a request of max_certs CertIDs is well below this. */
#define SC_OCSP_HTTP_MAX_URL 8192

/* Latency histogram bucket bounds, microseconds. */
static const uint64_t sc_ocsp_buckets_us[] = {
	100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000 };
#define SC_OCSP_NBUCKETS (sizeof(sc_ocsp_buckets_us) / sizeof(sc_ocsp_buckets_us[0]))

enum sc_ocsp_outcome {
	OUT_GOOD, OUT_REVOKED, OUT_UNKNOWN, OUT_MALFORMED, OUT_UNAUTHORIZED,
	OUT_INTERNAL, OUT_NOT_MODIFIED, OUT_HTTP_ERROR, OUT_OTHER, OUT_COUNT
};
static const char *const sc_ocsp_outcome_names[OUT_COUNT] = {
	"good", "revoked", "unknown", "malformedRequest", "unauthorized",
	"internalError", "not_modified", "http_error", "other" };

struct sc_ocsp_http {
	/* One MHD daemon per worker thread, each accepting on its own
	 * SO_REUSEPORT socket of the same address (ocsp_cpu.h says which
	 * socket takes a new connection).  With MHD's
	 * thread pool on one shared socket, whichever worker woke first
	 * accepted a whole burst, and keep-alive connections stay where they
	 * were accepted: wrk -c8 often had all eight on one thread while the
	 * other CPU idled. */
	struct MHD_Daemon **workers;
	unsigned nworkers;
	sc_ocsp_cpu *cpu;               /* which worker takes a connection */
	struct sc_ocsp_wctx *wctx;      /* per worker: connection notifications */
	sc_ocsp_guard *guard;           /* request deadline, per-address cap */
	pthread_key_t tcache_key;       /* struct sc_ocsp_tcache per worker */
	int tcache_key_ok;
	pthread_rwlock_t lock;          /* guards resp, crl_dir, ca */
	sc_ocsp_responder *resp;
	char *crl_dir;
	unsigned char *ca_der[3];
	size_t ca_len[3];
	char *prefix;
	size_t prefix_len;
	size_t max_body;
	unsigned max_age;               /* Cache-Control max-age bound, seconds */
	unsigned log_rate;
	unsigned port;
	int64_t started;
	_Atomic uint64_t outcome[OUT_COUNT];
	_Atomic uint64_t by_method[2];          /* GET, POST */
	_Atomic uint64_t lat_bucket[SC_OCSP_NBUCKETS + 1];
	_Atomic uint64_t lat_sum_us, lat_count;
	_Atomic uint64_t age_sum, age_count;    /* age of served responses */
	_Atomic int64_t log_second;
	_Atomic uint32_t log_count;
	_Atomic uint64_t log_dropped;
};

/* What the connection notifications of one worker need. */
struct sc_ocsp_wctx {
	sc_ocsp_http *h;
	sc_ocsp_cpu_worker *cpu;
};

/* Per connection (MHD's socket context). */
struct sc_ocsp_sock {
	sc_ocsp_cpu_conn *cpu;
	sc_ocsp_gconn *guard;
};

struct sc_ocsp_conn {
	unsigned char *body;
	size_t len;
	int too_big;
	struct timespec start;
};

static const char *const sc_ocsp_ca_names[3] = {
	"root-ca.crt", "issuing-ca.crt", "ocsp-signer.crt" };

static uint64_t ocsp_elapsed_us(const struct timespec *start)
{
	struct timespec now;
	int64_t us;

	clock_gettime(CLOCK_MONOTONIC, &now);
	us = (int64_t)(now.tv_sec - start->tv_sec) * 1000000 +
	     (now.tv_nsec - start->tv_nsec) / 1000;
	return us < 0 ? 0 : (uint64_t)us;
}

static void ocsp_observe(sc_ocsp_http *h, enum sc_ocsp_outcome o, uint64_t us)
{
	size_t i;

	atomic_fetch_add_explicit(&h->outcome[o], 1, memory_order_relaxed);
	for (i = 0; i < SC_OCSP_NBUCKETS && us > sc_ocsp_buckets_us[i]; i++)
		;
	atomic_fetch_add_explicit(&h->lat_bucket[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->lat_sum_us, us, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->lat_count, 1, memory_order_relaxed);
}

/* At most log_rate lines per second; the rest are counted. */
static int ocsp_log_allowed(sc_ocsp_http *h)
{
	int64_t now = (int64_t)time(NULL), cur;

	if (h->log_rate == 0)
		return 0;
	cur = atomic_load_explicit(&h->log_second, memory_order_relaxed);
	if (cur != now &&
	    atomic_compare_exchange_strong(&h->log_second, &cur, now))
		atomic_store_explicit(&h->log_count, 0, memory_order_relaxed);
	if (atomic_fetch_add_explicit(&h->log_count, 1, memory_order_relaxed) < h->log_rate)
		return 1;
	atomic_fetch_add_explicit(&h->log_dropped, 1, memory_order_relaxed);
	return 0;
}

static void ocsp_log(sc_ocsp_http *h, struct MHD_Connection *c, const char *method,
			const char *route, unsigned http, const sc_ocsp_result *res,
			uint64_t us)
{
	sc_json j;
	const union MHD_ConnectionInfo *ci;
	char peer[INET6_ADDRSTRLEN] = "";

	if (!ocsp_log_allowed(h))
		return;
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci != NULL && ci->client_addr != NULL) {
		const struct sockaddr *sa = ci->client_addr;

		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
				  peer, sizeof(peer));
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
				  peer, sizeof(peer));
	}
	sc_json_init(&j);
	sc_json_obj_begin(&j);
	sc_json_kv_time(&j, "ts", (int64_t)time(NULL));
	sc_json_kv_str(&j, "event", "ocsp.request");
	sc_json_kv_str(&j, "peer", peer);
	sc_json_kv_str(&j, "method", method);
	sc_json_kv_str(&j, "route", route);
	sc_json_kv_int(&j, "http", http);
	if (res != NULL) {
		sc_json_kv_str(&j, "ocsp", sc_ocsp_status_name(res->status));
		if (res->cert_status >= 0)
			sc_json_kv_str(&j, "cert", sc_ocsp_cert_status_name(res->cert_status));
		if (res->serial[0] != '\0')
			sc_json_kv_str(&j, "serial", res->serial);
		sc_json_kv_int(&j, "certs", res->n_certs);
		sc_json_kv_bool(&j, "presigned", res->presigned || res->cached);
		sc_json_kv_bool(&j, "nonce", res->nonce);
		if (res->err != 0)
			sc_json_kv_str(&j, "error", sc_errname(res->err));
	}
	sc_json_kv_int(&j, "us", (int64_t)us);
	sc_json_obj_end(&j);
	if (!j.failed) {
		/* One write(2), no stdio lock: workers logging at the same
		 * time do not queue behind each other's writes, and a line
		 * reaches a pipe (journald) whole. */
		struct iovec iov[2] = { { j.buf, j.len }, { (void *)(uintptr_t)"\n", 1 } };

		(void)!writev(STDERR_FILENO, iov, 2);
	}
	sc_json_free(&j);
}

static enum MHD_Result ocsp_queue_buf(struct MHD_Connection *c, unsigned code,
					 const char *ctype, const void *buf, size_t len,
					 enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(len, (void *)(uintptr_t)buf, mode);
	if (r == NULL)
		return MHD_NO;
	if (ctype != NULL)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)   /* RFC 9110 §15.5.6 */
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, POST");
	ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result ocsp_text(struct MHD_Connection *c, unsigned code, const char *msg)
{
	return ocsp_queue_buf(c, code, "text/plain; charset=utf-8", msg, strlen(msg),
				 MHD_RESPMEM_PERSISTENT);
}

static void ocsp_http_date(int64_t t, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;

	gmtime_r(&tt, &tm);
	strftime(buf, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static int ocsp_parse_http_date(const char *s, int64_t *out)
{
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (end == NULL || *end != '\0')
		return -1;
	*out = (int64_t)timegm(&tm);
	return 0;
}

/* What a worker thread keeps of the last cacheable response it served:
 * the RFC 5019 validators (ETag: the first 128 bits of the SHA-256;
 * Last-Modified from thisUpdate) and the MHD
 * response itself, headers included, rebuilt when the second changes
 * (Cache-Control max-age counts down).  Clients ask for the same few
 * responses over and over: a byte compare then replaces a digest, two
 * date formats, and the allocation of a response and its five headers. */
struct sc_ocsp_tcache {
	unsigned char der[2048];
	size_t len;
	int64_t this_update, next_update;
	int lm_ok;                     /* Last-Modified sent and If-Modified-Since honoured */
	char etag[2 + 2 * 16 + 1];
	char last_modified[40];
	struct MHD_Response *resp;
	int64_t resp_now;
};

static void ocsp_tcache_free(void *p)
{
	struct sc_ocsp_tcache *t = p;

	if (t != NULL && t->resp != NULL)
		MHD_destroy_response(t->resp);
	free(t);
}

/* This thread's cache, refreshed for `der`; NULL without memory. */
static struct sc_ocsp_tcache *ocsp_tcache_get(sc_ocsp_http *h, const unsigned char *der,
						 size_t len, const sc_ocsp_result *res)
{
	struct sc_ocsp_tcache *t = pthread_getspecific(h->tcache_key);
	unsigned char md[SHA256_DIGEST_LENGTH];

	if (t == NULL) {
		t = calloc(1, sizeof(*t));
		if (t == NULL || pthread_setspecific(h->tcache_key, t) != 0) {
			free(t);
			return NULL;
		}
	}
	if (t->len != 0 && t->len == len && t->this_update == res->this_update &&
	    t->next_update == res->next_update && memcmp(t->der, der, len) == 0)
		return t;
	if (t->resp != NULL)
		MHD_destroy_response(t->resp);
	t->resp = NULL;
	SHA256(der, len, md);
	t->etag[0] = '"';
	sc_hex_encode(md, 16, t->etag + 1);
	t->etag[33] = '"';
	t->etag[34] = '\0';
	ocsp_http_date(res->this_update, t->last_modified, sizeof(t->last_modified));
	t->this_update = res->this_update;
	t->next_update = res->next_update;
	/* Last-Modified is thisUpdate, a whole second: not for an answer
	 * signed in the second of its certificate's status change, as an
	 * answer from before the change in that second carried the same
	 * date (validated by its ETag alone; the responder stores only
	 * answers from later seconds). */
	t->lm_ok = !res->no_last_modified;
	/* A response too big to keep is validated afresh each time. */
	t->len = len <= sizeof(t->der) ? len : 0;
	memcpy(t->der, der, t->len);
	return t;
}

/* RFC 5019 §6 caching headers, or no-store when `t` is NULL.  An HTTP
 * cache may keep the answer for min(ocsp.max_age, nextUpdate - now)
 * seconds: that bounds how long it can go on serving "good" after a
 * revocation (docs/ocsp.md, "Caching"). */
static void ocsp_cache_headers(const sc_ocsp_http *h, struct MHD_Response *r,
				  const struct sc_ocsp_tcache *t, int64_t now)
{
	char cc_hdr[128], expires[40];
	int64_t age;

	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/ocsp-response");
	if (t == NULL) {
		MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
		return;
	}
	age = t->next_update - now;
	if (age > (int64_t)h->max_age)
		age = (int64_t)h->max_age;
	snprintf(cc_hdr, sizeof(cc_hdr), "max-age=%lld, public, no-transform, must-revalidate",
		 (long long)age);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, cc_hdr);
	if (t->lm_ok)
		MHD_add_response_header(r, MHD_HTTP_HEADER_LAST_MODIFIED, t->last_modified);
	/* HTTP/1.0 caches read Expires: the same bound (nextUpdate at most) */
	ocsp_http_date(now + age, expires, sizeof(expires));
	MHD_add_response_header(r, MHD_HTTP_HEADER_EXPIRES, expires);
	MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, t->etag);
}

/* Standard base64 from an RFC 5019 URL (already percent-decoded by MHD:
 * '+' and '/' are kept as they are); padding optional. */
static int ocsp_b64_request(const char *s, unsigned char **out, size_t *out_len)
{
	size_t n = strlen(s), padded;
	char *tmp;
	int rv;

	while (n > 0 && s[n - 1] == '=')
		n--;
	if (n == 0 || n > SC_OCSP_HTTP_MAX_URL || n % 4 == 1)
		return SC_ERR_INVALID;
	padded = (n + 3) / 4 * 4;
	tmp = malloc(padded + 1);
	if (tmp == NULL)
		return SC_ERR_NOMEM;
	memcpy(tmp, s, n);
	memset(tmp + n, '=', padded - n);
	tmp[padded] = '\0';
	rv = sc_b64_decode(tmp, padded, out, out_len);
	free(tmp);
	return rv;
}

static enum sc_ocsp_outcome ocsp_outcome_of(const sc_ocsp_result *res)
{
	switch (res->status) {
	case SC_OCSP_SUCCESSFUL:
		if (res->cert_status == SC_OCSP_GOOD)
			return OUT_GOOD;
		if (res->cert_status == SC_OCSP_REVOKED)
			return OUT_REVOKED;
		if (res->cert_status == SC_OCSP_UNKNOWN)
			return OUT_UNKNOWN;
		return OUT_OTHER;
	case SC_OCSP_MALFORMED:
		return OUT_MALFORMED;
	case SC_OCSP_UNAUTHORIZED:
		return OUT_UNAUTHORIZED;
	case SC_OCSP_INTERNAL_ERROR:
		return OUT_INTERNAL;
	default:
		return OUT_OTHER;
	}
}

static void ocsp_notify_connection(void *cls, struct MHD_Connection *c,
				      void **socket_context,
				      enum MHD_ConnectionNotificationCode toe)
{
	struct sc_ocsp_wctx *w = cls;
	struct sc_ocsp_sock *s = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *fd, *addr;

		s = calloc(1, sizeof(*s));
		if (s == NULL)
			return;
		s->cpu = sc_ocsp_cpu_conn_open(w->cpu);
		fd = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		addr = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		if (fd != NULL)
			s->guard = sc_ocsp_guard_open(w->h->guard, fd->connect_fd,
						      addr != NULL ? addr->client_addr : NULL);
		*socket_context = s;
	} else if (s != NULL) {
		/* before MHD closes the descriptor */
		sc_ocsp_guard_close(w->h->guard, s->guard);
		sc_ocsp_cpu_conn_close(s->cpu);
		free(s);
		*socket_context = NULL;
	}
}

static struct sc_ocsp_sock *ocsp_sock_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *i =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return i != NULL ? i->socket_context : NULL;
}

static enum MHD_Result ocsp_admit(void *cls, const struct sockaddr *addr, socklen_t len)
{
	sc_ocsp_http *h = cls;

	return sc_ocsp_guard_admit(h->guard, addr, len) ? MHD_YES : MHD_NO;
}

/* Whether this response closes the connection to move it (ocsp_cpu.h). */
static int ocsp_move(struct MHD_Connection *c, const struct sc_ocsp_conn *cc)
{
	const union MHD_ConnectionInfo *fd;
	struct sc_ocsp_sock *s = ocsp_sock_of(c);

	if (s == NULL || !sc_ocsp_cpu_due(s->cpu))
		return 0;
	fd = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	return fd != NULL &&
	       sc_ocsp_cpu_check(s->cpu, fd->connect_fd,
				 (int64_t)cc->start.tv_sec * 1000 + cc->start.tv_nsec / 1000000);
}

static enum MHD_Result ocsp_answer(sc_ocsp_http *h, struct MHD_Connection *c,
				      struct sc_ocsp_conn *cc, int is_get,
				      const unsigned char *req, size_t req_len)
{
	sc_ocsp_result res;
	unsigned char *der = NULL;
	size_t der_len = 0;
	struct MHD_Response *r = NULL;
	enum MHD_Result ret = MHD_NO;
	unsigned code = MHD_HTTP_OK;
	int rv, cacheable, not_modified = 0, move;
	struct sc_ocsp_tcache *tc = NULL;
	int64_t now;
	uint64_t us;

	pthread_rwlock_rdlock(&h->lock);
	if (h->resp == NULL) {
		pthread_rwlock_unlock(&h->lock);
		return ocsp_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "responder not ready\n");
	}
	rv = sc_ocsp_respond(h->resp, req, req_len, &der, &der_len, &res);
	pthread_rwlock_unlock(&h->lock);
	if (rv != 0)
		return ocsp_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");

	move = ocsp_move(c, cc);
	now = sc_now();
	cacheable = is_get && res.status == SC_OCSP_SUCCESSFUL && !res.nonce &&
		    res.next_update > now;
	if (cacheable) {
		const char *inm, *ims;
		int64_t t;

		tc = ocsp_tcache_get(h, der, der_len, &res);
		if (tc == NULL)
			goto out;
		inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
		ims = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						  MHD_HTTP_HEADER_IF_MODIFIED_SINCE);
		if (inm != NULL) {
			not_modified = strstr(inm, tc->etag) != NULL || strcmp(inm, "*") == 0;
		} else if (ims != NULL && tc->lm_ok && ocsp_parse_http_date(ims, &t) == 0) {
			/* RFC 9110 §13.1.3: a date later than now is not valid */
			not_modified = res.this_update <= t && t <= now;
		}
	}
	if (cacheable && !not_modified && tc->len != 0 && !move) {
		if (tc->resp == NULL || tc->resp_now != now) {
			r = MHD_create_response_from_buffer(der_len, der, MHD_RESPMEM_MUST_COPY);
			if (r == NULL)
				goto out;
			ocsp_cache_headers(h, r, tc, now);
			if (tc->resp != NULL)
				MHD_destroy_response(tc->resp);
			tc->resp = r;
			tc->resp_now = now;
		}
		ret = MHD_queue_response(c, code, tc->resp);
		goto out;
	}
	if (not_modified) {
		code = MHD_HTTP_NOT_MODIFIED;
		r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	} else {
		r = MHD_create_response_from_buffer(der_len, der, MHD_RESPMEM_MUST_FREE);
		if (r != NULL)
			der = NULL;
	}
	if (r == NULL)
		goto out;
	ocsp_cache_headers(h, r, cacheable ? tc : NULL, now);
	if (move)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
out:
	free(der);
	us = ocsp_elapsed_us(&cc->start);
	ocsp_observe(h, not_modified ? OUT_NOT_MODIFIED : ocsp_outcome_of(&res), us);
	atomic_fetch_add_explicit(&h->by_method[is_get ? 0 : 1], 1, memory_order_relaxed);
	if (res.status == SC_OCSP_SUCCESSFUL && res.this_update > 0) {
		atomic_fetch_add_explicit(&h->age_sum, (uint64_t)(now - res.this_update),
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&h->age_count, 1, memory_order_relaxed);
	}
	ocsp_log(h, c, is_get ? "GET" : "POST", "ocsp", code, &res, us);
	return ret;
}

static enum MHD_Result ocsp_error(sc_ocsp_http *h, struct MHD_Connection *c,
				     struct sc_ocsp_conn *cc, const char *method,
				     unsigned code, const char *msg)
{
	uint64_t us = ocsp_elapsed_us(&cc->start);

	ocsp_observe(h, OUT_HTTP_ERROR, us);
	ocsp_log(h, c, method, "error", code, NULL, us);
	return ocsp_text(c, code, msg);
}

static void ocsp_metric(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void ocsp_metric(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*buf == NULL)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			free(*buf);
			*buf = NULL;
			return;
		}
		if ((size_t)n < *cap - *len) {
			*len += (size_t)n;
			return;
		}
		{
			char *nb = realloc(*buf, *cap * 2);

			if (nb == NULL) {
				free(*buf);
				*buf = NULL;
				return;
			}
			*buf = nb;
			*cap *= 2;
		}
	}
}

static enum MHD_Result ocsp_metrics(sc_ocsp_http *h, struct MHD_Connection *c)
{
	size_t cap = 8192, len = 0, i;
	char *b = malloc(cap);
	sc_ocsp_stats st;
	uint64_t cum = 0;

	pthread_rwlock_rdlock(&h->lock);
	sc_ocsp_stats_get(h->resp, &st);
	pthread_rwlock_unlock(&h->lock);
	ocsp_metric(&b, &len, &cap,
		       "# HELP smartcert_ocsp_requests_total OCSP requests by result.\n"
		       "# TYPE smartcert_ocsp_requests_total counter\n");
	for (i = 0; i < OUT_COUNT; i++)
		ocsp_metric(&b, &len, &cap, "smartcert_ocsp_requests_total{result=\"%s\"} %llu\n",
			       sc_ocsp_outcome_names[i],
			       (unsigned long long)atomic_load(&h->outcome[i]));
	ocsp_metric(&b, &len, &cap,
		       "# TYPE smartcert_ocsp_requests_by_method_total counter\n"
		       "smartcert_ocsp_requests_by_method_total{method=\"GET\"} %llu\n"
		       "smartcert_ocsp_requests_by_method_total{method=\"POST\"} %llu\n",
		       (unsigned long long)atomic_load(&h->by_method[0]),
		       (unsigned long long)atomic_load(&h->by_method[1]));
	ocsp_metric(&b, &len, &cap,
		       "# HELP smartcert_ocsp_request_duration_seconds Time from request to response queued.\n"
		       "# TYPE smartcert_ocsp_request_duration_seconds histogram\n");
	for (i = 0; i <= SC_OCSP_NBUCKETS; i++) {
		cum += atomic_load(&h->lat_bucket[i]);
		if (i < SC_OCSP_NBUCKETS)
			ocsp_metric(&b, &len, &cap,
				       "smartcert_ocsp_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
				       (double)sc_ocsp_buckets_us[i] / 1e6, (unsigned long long)cum);
		else
			ocsp_metric(&b, &len, &cap,
				       "smartcert_ocsp_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
				       (unsigned long long)cum);
	}
	ocsp_metric(&b, &len, &cap,
		       "smartcert_ocsp_request_duration_seconds_sum %.6f\n"
		       "smartcert_ocsp_request_duration_seconds_count %llu\n",
		       (double)atomic_load(&h->lat_sum_us) / 1e6,
		       (unsigned long long)atomic_load(&h->lat_count));
	ocsp_metric(&b, &len, &cap,
		       "# HELP smartcert_ocsp_response_age_seconds Age (now - thisUpdate) of responses served.\n"
		       "# TYPE smartcert_ocsp_response_age_seconds summary\n"
		       "smartcert_ocsp_response_age_seconds_sum %llu\n"
		       "smartcert_ocsp_response_age_seconds_count %llu\n",
		       (unsigned long long)atomic_load(&h->age_sum),
		       (unsigned long long)atomic_load(&h->age_count));
	ocsp_metric(&b, &len, &cap,
		       "# TYPE smartcert_ocsp_presigned_total counter\n"
		       "smartcert_ocsp_presigned_total{event=\"hit\"} %llu\n"
		       "smartcert_ocsp_presigned_total{event=\"miss\"} %llu\n"
		       "smartcert_ocsp_presigned_total{event=\"cache_hit\"} %llu\n"
		       "smartcert_ocsp_presigned_total{event=\"stored\"} %llu\n"
		       "smartcert_ocsp_presigned_total{event=\"resigned\"} %llu\n"
		       "smartcert_ocsp_presigned_total{event=\"resigned_changed\"} %llu\n"
		       "smartcert_ocsp_presigned_total{event=\"ahead\"} %llu\n"
		       "smartcert_ocsp_presigned_total{event=\"memory_hit\"} %llu\n"
		       "# TYPE smartcert_ocsp_signatures_total counter\n"
		       "smartcert_ocsp_signatures_total %llu\n"
		       "# TYPE smartcert_ocsp_errors_total counter\n"
		       "smartcert_ocsp_errors_total{kind=\"store\"} %llu\n"
		       "smartcert_ocsp_errors_total{kind=\"sign\"} %llu\n"
		       "# HELP smartcert_ocsp_cpu_steering 1 when connections are steered to workers by CPU (docs/ocsp.md, HTTP).\n"
		       "# TYPE smartcert_ocsp_cpu_steering gauge\n"
		       "smartcert_ocsp_cpu_steering %d\n"
		       "# HELP smartcert_ocsp_connections_moved_total Keep-alive connections closed so that their client reconnects to the worker of the CPU it sends from.\n"
		       "# TYPE smartcert_ocsp_connections_moved_total counter\n"
		       "smartcert_ocsp_connections_moved_total %llu\n"
		       "# HELP smartcert_ocsp_connections_closed_total Connections the daemon closed or refused to protect the others (docs/ocsp.md, slow clients).\n"
		       "# TYPE smartcert_ocsp_connections_closed_total counter\n"
		       "smartcert_ocsp_connections_closed_total{reason=\"request_deadline\"} %llu\n"
		       "smartcert_ocsp_connections_closed_total{reason=\"per_address_limit\"} %llu\n"
		       "# TYPE smartcert_ocsp_log_dropped_total counter\n"
		       "smartcert_ocsp_log_dropped_total %llu\n"
		       "# TYPE smartcert_ocsp_uptime_seconds gauge\n"
		       "smartcert_ocsp_uptime_seconds %lld\n",
		       (unsigned long long)st.presigned_hits, (unsigned long long)st.presign_misses,
		       (unsigned long long)st.cache_hits, (unsigned long long)st.stored,
		       (unsigned long long)st.resigned, (unsigned long long)st.resigned_changed,
		       (unsigned long long)st.ahead, (unsigned long long)st.memory_hits,
		       (unsigned long long)st.signed_on_demand,
		       (unsigned long long)st.store_errors, (unsigned long long)st.sign_errors,
		       sc_ocsp_cpu_steered(h->cpu),
		       (unsigned long long)sc_ocsp_cpu_moved(h->cpu),
		       (unsigned long long)sc_ocsp_guard_dropped(h->guard),
		       (unsigned long long)sc_ocsp_guard_refused(h->guard),
		       (unsigned long long)atomic_load(&h->log_dropped),
		       (long long)(sc_now() - h->started));
	if (b == NULL)
		return ocsp_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	return ocsp_queue_buf(c, MHD_HTTP_OK, "text/plain; version=0.0.4", b, len,
				 MHD_RESPMEM_MUST_FREE);
}

static int ocsp_safe_name(const char *n)
{
	size_t i;

	if (n[0] == '\0' || n[0] == '.' || strlen(n) > 200)
		return 0;
	for (i = 0; n[i] != '\0'; i++) {
		char ch = n[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_'))
			return 0;
	}
	return 1;
}

static enum MHD_Result ocsp_serve_crl(sc_ocsp_http *h, struct MHD_Connection *c,
					 const char *name)
{
	char path[4096];
	struct MHD_Response *r;
	struct stat stt;
	enum MHD_Result ret;
	int fd = -1, n;

	pthread_rwlock_rdlock(&h->lock);
	n = h->crl_dir == NULL ? -1 : snprintf(path, sizeof(path), "%s/%s", h->crl_dir, name);
	pthread_rwlock_unlock(&h->lock);
	if (n < 0 || (size_t)n >= sizeof(path) || !ocsp_safe_name(name))
		return ocsp_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &stt) != 0 || !S_ISREG(stt.st_mode)) {
		if (fd >= 0)
			close(fd);
		return ocsp_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
	}
	r = MHD_create_response_from_fd((uint64_t)stt.st_size, fd);
	if (r == NULL) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/pkix-crl");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "max-age=300, public");
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result ocsp_serve_ca(sc_ocsp_http *h, struct MHD_Connection *c,
					const char *name)
{
	enum MHD_Result ret = MHD_NO;
	size_t i;
	int found = 0;

	pthread_rwlock_rdlock(&h->lock);
	for (i = 0; i < 3; i++) {
		if (strcmp(name, sc_ocsp_ca_names[i]) == 0 && h->ca_der[i] != NULL) {
			found = 1;
			ret = ocsp_queue_buf(c, MHD_HTTP_OK, "application/pkix-cert",
						h->ca_der[i], h->ca_len[i], MHD_RESPMEM_MUST_COPY);
			break;
		}
	}
	pthread_rwlock_unlock(&h->lock);
	if (!found)
		return ocsp_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
	return ret;
}

static int ocsp_is_prefix(const sc_ocsp_http *h, const char *url, const char **rest)
{
	if (strncmp(url, h->prefix, h->prefix_len) != 0)
		return 0;
	url += h->prefix_len;
	if (*url == '\0') {
		*rest = url;
		return 1;
	}
	if (*url != '/')
		return 0;
	*rest = url + 1;   /* exactly one '/': base64 may itself start with '/' */
	return 1;
}

struct sc_ocsp_length_seen {
	const char *first;
	int conflict;
};

static enum MHD_Result ocsp_length_cb(void *cls, enum MHD_ValueKind kind, const char *key,
					 const char *value)
{
	struct sc_ocsp_length_seen *s = cls;

	(void)kind;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) != 0)
		return MHD_YES;
	if (value == NULL || strchr(value, ',') != NULL ||
	    (s->first != NULL && strcmp(s->first, value) != 0))
		s->conflict = 1;
	if (s->first == NULL)
		s->first = value;
	return MHD_YES;
}

/* RFC 9112 §6.3: several Content-Length values that differ (or a list)
 * make the message length unknowable: 400, never a guess. */
static int ocsp_one_length(struct MHD_Connection *c)
{
	struct sc_ocsp_length_seen s = { NULL, 0 };

	MHD_get_connection_values(c, MHD_HEADER_KIND, ocsp_length_cb, &s);
	return !s.conflict;
}

static enum MHD_Result ocsp_handler(void *cls, struct MHD_Connection *c, const char *url,
				       const char *method, const char *version,
				       const char *upload_data, size_t *upload_data_size,
				       void **con_cls)
{
	sc_ocsp_http *h = cls;
	struct sc_ocsp_conn *cc = *con_cls;
	int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
		     strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	int is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	const char *rest = NULL;

	(void)version;
	if (cc == NULL) {
		const char *ct, *cl;

		cc = calloc(1, sizeof(*cc));
		if (cc == NULL)
			return MHD_NO;
		clock_gettime(CLOCK_MONOTONIC, &cc->start);
		*con_cls = cc;
		/* Refused before any body is read (MHD then closes). */
		if (!ocsp_one_length(c))
			return ocsp_error(h, c, cc, method, MHD_HTTP_BAD_REQUEST,
					     "conflicting Content-Length\n");
		if (!is_post && !is_get)
			return ocsp_error(h, c, cc, method, MHD_HTTP_METHOD_NOT_ALLOWED,
					     "method not allowed\n");
		if (!is_post)
			return MHD_YES;
		ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
		cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (!ocsp_is_prefix(h, url, &rest) || *rest != '\0')
			return ocsp_error(h, c, cc, method, MHD_HTTP_NOT_FOUND, "not found\n");
		/* Refuse before reading the body: MHD then closes. */
		if (ct == NULL || strncasecmp(ct, "application/ocsp-request", 24) != 0 ||
		    (ct[24] != '\0' && ct[24] != ';' && ct[24] != ' '))
			return ocsp_error(h, c, cc, method, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
					     "Content-Type must be application/ocsp-request\n");
		if (cl != NULL && strtoull(cl, NULL, 10) > h->max_body)
			return ocsp_error(h, c, cc, method, MHD_HTTP_CONTENT_TOO_LARGE,
					     "request too large\n");
		return MHD_YES;
	}
	if (is_post && *upload_data_size > 0) {
		if (!cc->too_big) {
			if (cc->len + *upload_data_size > h->max_body) {
				cc->too_big = 1;
				free(cc->body);
				cc->body = NULL;
			} else {
				unsigned char *nb = realloc(cc->body, cc->len + *upload_data_size);

				if (nb == NULL)
					return MHD_NO;
				memcpy(nb + cc->len, upload_data, *upload_data_size);
				cc->body = nb;
				cc->len += *upload_data_size;
			}
		}
		*upload_data_size = 0;
		return MHD_YES;
	}

	/* the whole request is in: the deadline no longer runs */
	{
		struct sc_ocsp_sock *sk = ocsp_sock_of(c);

		if (sk != NULL)
			sc_ocsp_guard_received(sk->guard);
	}
	if (is_post) {
		if (cc->too_big)
			return ocsp_error(h, c, cc, method, MHD_HTTP_CONTENT_TOO_LARGE,
					     "request too large\n");
		return ocsp_answer(h, c, cc, 0, cc->body, cc->len);
	}
	if (!is_get)
		return ocsp_error(h, c, cc, method, MHD_HTTP_METHOD_NOT_ALLOWED,
				     "method not allowed\n");
	if (strcmp(url, "/healthz") == 0) {
		int ready;

		pthread_rwlock_rdlock(&h->lock);
		ready = h->resp == NULL ? 0 : sc_now() < sc_ocsp_signer_not_after(h->resp) ? 1 : -1;
		pthread_rwlock_unlock(&h->lock);
		return ready > 0 ? ocsp_text(c, MHD_HTTP_OK, "ok\n")
		       : ready < 0 ? ocsp_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
						  "OCSP signer certificate expired\n")
				   : ocsp_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "starting\n");
	}
	if (strcmp(url, "/metrics") == 0)
		return ocsp_metrics(h, c);
	if (strncmp(url, "/crl/", 5) == 0 && h->crl_dir != NULL)
		return ocsp_serve_crl(h, c, url + 5);
	if (strncmp(url, "/ca/", 4) == 0 && h->crl_dir != NULL)
		return ocsp_serve_ca(h, c, url + 4);
	if (ocsp_is_prefix(h, url, &rest) && *rest != '\0') {
		unsigned char *req = NULL;
		size_t req_len = 0;
		enum MHD_Result ret;

		if (ocsp_b64_request(rest, &req, &req_len) != 0) {
			/* Not base64 at all: an OCSP error, as for undecodable DER. */
			static const unsigned char malformed[] = { 0x30, 0x03, 0x0a, 0x01, 0x01 };
			uint64_t us = ocsp_elapsed_us(&cc->start);

			ocsp_observe(h, OUT_MALFORMED, us);
			atomic_fetch_add_explicit(&h->by_method[0], 1, memory_order_relaxed);
			ocsp_log(h, c, method, "ocsp-badb64", 400, NULL, us);
			{
				struct MHD_Response *r = MHD_create_response_from_buffer(
					sizeof(malformed), (void *)(uintptr_t)malformed,
					MHD_RESPMEM_PERSISTENT);

				if (r == NULL)
					return MHD_NO;
				MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
							"application/ocsp-response");
				ret = MHD_queue_response(c, MHD_HTTP_BAD_REQUEST, r);
				MHD_destroy_response(r);
			}
			return ret;
		}
		ret = ocsp_answer(h, c, cc, 1, req, req_len);
		free(req);
		return ret;
	}
	return ocsp_error(h, c, cc, method, MHD_HTTP_NOT_FOUND, "not found\n");
}

static void ocsp_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			      enum MHD_RequestTerminationCode toe)
{
	struct sc_ocsp_conn *cc = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (cc != NULL) {
		free(cc->body);
		free(cc);
		*con_cls = NULL;
	}
}

static int ocsp_parse_listen(const char *listen, struct sockaddr_storage *ss,
				socklen_t *sl, int *v6)
{
	char host[256];
	const char *colon, *hs, *he;
	char *end;
	unsigned long port;

	memset(ss, 0, sizeof(*ss));
	if (listen[0] == '[') {
		hs = listen + 1;
		he = strchr(hs, ']');
		if (he == NULL || he[1] != ':')
			return SC_ERR_CONFIG;
		colon = he + 1;
	} else {
		hs = listen;
		colon = strrchr(listen, ':');
		if (colon == NULL)
			return SC_ERR_CONFIG;
		he = colon;
	}
	if ((size_t)(he - hs) >= sizeof(host))
		return SC_ERR_CONFIG;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || end == colon + 1 || port > 65535)
		return SC_ERR_CONFIG;
	if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0",
		      &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		((struct sockaddr_in *)ss)->sin_family = AF_INET;
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
		*sl = sizeof(struct sockaddr_in);
		*v6 = 0;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
		*sl = sizeof(struct sockaddr_in6);
		*v6 = 1;
		return 0;
	}
	return SC_ERR_CONFIG;
}

/* A socket bound to `ss` (port 0: any), listening with `group` (the
 * SO_REUSEPORT group of the workers); without, a probe that the address is
 * free, since a socket in the group of another daemon of the same user
 * would otherwise be joined silently. */
static int ocsp_listen_socket(const char *listen_str, const struct sockaddr_storage *ss,
				 socklen_t sl, int v6, int group, int *fd_out, unsigned *port_out)
{
	struct sockaddr_storage bound;
	socklen_t bl = sizeof(bound);
	int fd, one = 1, rv;

	fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto out;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    (group && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
	    (v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
	    bind(fd, (const struct sockaddr *)ss, sl) != 0 || (group && listen(fd, 1024) != 0) ||
	    getsockname(fd, (struct sockaddr *)&bound, &bl) != 0)
		goto out;
	*port_out = ntohs(bound.ss_family == AF_INET6
			  ? ((struct sockaddr_in6 *)&bound)->sin6_port
			  : ((struct sockaddr_in *)&bound)->sin_port);
	*fd_out = fd;
	return 0;
out:
	rv = sc_error_set(SC_ERR_IO, "cannot listen on %s: %s (address in use, or not "
			  "allowed to bind?)", listen_str, strerror(errno));
	if (fd >= 0)
		close(fd);
	return rv;
}

static int ocsp_copy_files(sc_ocsp_http *h, const char *crl_dir,
			      const unsigned char *const ca_der[3], const size_t ca_len[3],
			      char **dir_out, unsigned char *der_out[3])
{
	size_t i;

	*dir_out = NULL;
	for (i = 0; i < 3; i++)
		der_out[i] = NULL;
	if (crl_dir != NULL && (*dir_out = strdup(crl_dir)) == NULL)
		goto out;
	for (i = 0; i < 3; i++) {
		if (ca_der[i] == NULL || ca_len[i] == 0)
			continue;
		der_out[i] = malloc(ca_len[i]);
		if (der_out[i] == NULL)
			goto out;
		memcpy(der_out[i], ca_der[i], ca_len[i]);
	}
	(void)h;
	return 0;
out:
	free(*dir_out);
	*dir_out = NULL;
	for (i = 0; i < 3; i++) {
		free(der_out[i]);
		der_out[i] = NULL;
	}
	return SC_ERR_NOMEM;
}

int sc_ocsp_http_set_files(sc_ocsp_http *h, const char *crl_dir,
			   const unsigned char *const ca_der[3], const size_t ca_der_len[3])
{
	char *dir, *old_dir;
	unsigned char *der[3], *old[3];
	size_t i;
	int rv;

	rv = ocsp_copy_files(h, crl_dir, ca_der, ca_der_len, &dir, der);
	if (rv != 0)
		return rv;
	pthread_rwlock_wrlock(&h->lock);
	old_dir = h->crl_dir;
	h->crl_dir = dir;
	for (i = 0; i < 3; i++) {
		old[i] = h->ca_der[i];
		h->ca_der[i] = der[i];
		h->ca_len[i] = der[i] != NULL ? ca_der_len[i] : 0;
	}
	pthread_rwlock_unlock(&h->lock);
	free(old_dir);
	for (i = 0; i < 3; i++)
		free(old[i]);
	return 0;
}

int sc_ocsp_http_start(const sc_ocsp_http_params *p, sc_ocsp_http **out)
{
	sc_ocsp_http *h = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = 0;
	int v6 = 0, rv = SC_ERR_NOMEM, probe, lfd = -1;
	unsigned threads = p->threads, limit;
	long ncpu;
	size_t plen;

	*out = NULL;
	if (ocsp_parse_listen(p->listen, &ss, &sl, &v6) != 0)
		return sc_error_set(SC_ERR_CONFIG, "ocsp.listen '%s' is not ADDR:PORT "
				    "(e.g. 127.0.0.1:8080 or [::1]:8080)", p->listen);
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		goto out;
	pthread_rwlock_init(&h->lock, NULL);
	if (pthread_key_create(&h->tcache_key, ocsp_tcache_free) != 0)
		goto out;
	h->tcache_key_ok = 1;
	h->started = sc_now();
	h->max_body = p->max_body ? p->max_body : SC_OCSP_HTTP_MAX_BODY;
	h->log_rate = p->log_rate;
	h->max_age = p->max_age;
	plen = p->path_prefix ? strlen(p->path_prefix) : 0;
	while (plen > 0 && p->path_prefix[plen - 1] == '/')
		plen--;
	h->prefix = strndup(p->path_prefix ? p->path_prefix : "", plen);
	if (h->prefix == NULL)
		goto out;
	h->prefix_len = plen;
	rv = ocsp_copy_files(h, p->crl_dir, p->ca_der, p->ca_der_len, &h->crl_dir, h->ca_der);
	if (rv != 0)
		goto out;
	for (int i = 0; i < 3; i++)
		h->ca_len[i] = h->ca_der[i] ? p->ca_der_len[i] : 0;
	if (threads == 0) {
		/* One per CPU the process may use (a cpuset or CPUAffinity=). */
		cpu_set_t allowed;

		ncpu = sched_getaffinity(0, sizeof(allowed), &allowed) == 0
		       ? CPU_COUNT(&allowed) : sysconf(_SC_NPROCESSORS_ONLN);
		threads = ncpu > 0 ? (unsigned)ncpu : 1;
	}
	rv = SC_ERR_NOMEM;
	h->workers = calloc(threads, sizeof(*h->workers));
	h->wctx = calloc(threads, sizeof(*h->wctx));
	if (h->workers == NULL || h->wctx == NULL)
		goto out;
	rv = sc_ocsp_guard_new(p->request_deadline_ms, p->per_address_limit, &h->guard);
	if (rv != 0)
		goto out;
	rv = SC_ERR_NOMEM;
	limit = p->conn_limit ? p->conn_limit : 10000u;
	/* A probe that nobody holds the address, then worker 0's socket on
	 * the port the probe got. */
	for (probe = 1; probe >= 0; probe--) {
		rv = ocsp_listen_socket(p->listen, &ss, sl, v6, !probe, &lfd, &h->port);
		if (rv != 0)
			goto out;
		if (v6)
			((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)h->port);
		else
			((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)h->port);
		if (probe)
			close(lfd);
	}
	for (h->nworkers = 0; h->nworkers < threads; h->nworkers++) {
		if (h->nworkers > 0) {
			rv = ocsp_listen_socket(p->listen, &ss, sl, v6, 1, &lfd, &h->port);
			if (rv != 0)
				goto out;
		} else {
			rv = sc_ocsp_cpu_new(lfd, threads, !p->no_cpu_steering, &h->cpu);
			if (rv != 0) {
				close(lfd);
				goto out;
			}
		}
		h->wctx[h->nworkers].h = h;
		h->wctx[h->nworkers].cpu = sc_ocsp_cpu_worker_at(h->cpu, h->nworkers);
		h->workers[h->nworkers] = MHD_start_daemon(
			MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO,
			0, ocsp_admit, h, ocsp_handler, h,
			MHD_OPTION_LISTEN_SOCKET, lfd,
			MHD_OPTION_CONNECTION_LIMIT, (limit + threads - 1) / threads,
			MHD_OPTION_CONNECTION_TIMEOUT, p->conn_timeout ? p->conn_timeout : 15u,
			MHD_OPTION_PER_IP_CONNECTION_LIMIT, 0u,
			MHD_OPTION_NOTIFY_COMPLETED, ocsp_completed, h,
			MHD_OPTION_NOTIFY_CONNECTION, ocsp_notify_connection,
			&h->wctx[h->nworkers],
			MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024),
			MHD_OPTION_END);
		if (h->workers[h->nworkers] == NULL) {
			/* lfd is not closed here: MHD may already have. */
			rv = sc_error_set(SC_ERR_IO, "cannot start HTTP worker %u of %u: %s "
					  "(out of memory or file descriptors?)", h->nworkers + 1,
					  threads, strerror(errno));
			goto out;
		}
	}
	*out = h;
	h = NULL;
	rv = 0;
out:
	sc_ocsp_http_stop(h);
	return rv;
}

sc_ocsp_responder *sc_ocsp_http_set_responder(sc_ocsp_http *h, sc_ocsp_responder *r)
{
	sc_ocsp_responder *old;

	pthread_rwlock_wrlock(&h->lock);
	old = h->resp;
	h->resp = r;
	pthread_rwlock_unlock(&h->lock);
	return old;
}

unsigned sc_ocsp_http_port(const sc_ocsp_http *h)
{
	return h->port;
}

void sc_ocsp_http_stop(sc_ocsp_http *h)
{
	size_t i;

	if (h == NULL)
		return;
	/* Each closes its listen socket and finishes its connections. */
	for (i = 0; h->workers != NULL && i < h->nworkers; i++)
		MHD_stop_daemon(h->workers[i]);
	free(h->workers);
	free(h->wctx);
	sc_ocsp_guard_free(h->guard);
	sc_ocsp_cpu_free(h->cpu);
	/* The workers' caches went with their threads. */
	if (h->tcache_key_ok)
		pthread_key_delete(h->tcache_key);
	pthread_rwlock_destroy(&h->lock);
	free(h->prefix);
	free(h->crl_dir);
	for (i = 0; i < 3; i++)
		free(h->ca_der[i]);
	free(h);
}
