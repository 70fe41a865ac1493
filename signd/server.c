/*
 * Listeners and connections of the signing service.
 *
 * One thread per connection, and one connection per PKCS#11 session of a
 * gateway: a gateway's threads each drive their own session, so their
 * signatures run in parallel here and meet in the group commit, which then
 * gets batches.  The peer is identified by the transport alone: SO_PEERCRED
 * on the Unix socket, the verified client certificate on TLS (a TCP client
 * without one is dropped in the handshake, before any request is read).
 *
 * Against a hostile peer: a frame longer than SC_WIRE_FRAME_MAX, a body
 * that does not decode, or a frame that does not arrive whole within
 * signd.request_timeout closes the connection; HELLO must come within the
 * same time after connecting; connections beyond signd.max_connections are
 * closed as they are accepted.  Idle connections between requests are
 * allowed (a gateway keeps its sessions open).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "internal.h"
#include "sc_util.h"
#include "sc_wire.h"

/* A connection thread that has finished, waiting to be joined (joining,
 * not detaching, orders everything the thread did, its thread-local
 * destructors included, before the service's own exit). */
struct done_thread {
	struct done_thread *next;
	pthread_t th;
};

struct conn {
	struct done_thread *done;      /* handed to the finished list at the end */
	int fd;
	SSL *ssl;
	struct sd_session s;
	int64_t timeout_ms;
	volatile sig_atomic_t *stop;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t idle;
	unsigned active;
	struct done_thread *finished;
	int64_t max_conns;
	int64_t timeout_ms;
	SSL_CTX *tls;
} srv = { .lock = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER };

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is readable (or writable): 1 ready, 0 deadline or stop,
 * -1 error.  deadline < 0 waits for ever (checking *stop each second). */
static int wait_fd(struct conn *c, short ev, int64_t deadline)
{
	struct pollfd p = { .fd = c->fd, .events = ev };
	int r, ms;

	for (;;) {
		if (__atomic_load_n(c->stop, __ATOMIC_ACQUIRE))
			return 0;
		ms = 1000;
		if (deadline >= 0) {
			int64_t left = deadline - mono_ms();

			if (left <= 0)
				return 0;
			if (left < ms)
				ms = (int)left;
		}
		r = poll(&p, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r > 0)
			return 1;
	}
}

/* Read exactly n bytes before the deadline (deadline < 0: the first byte
 * may take for ever, the rest must follow within the request timeout). */
static int read_full(struct conn *c, unsigned char *buf, size_t n, int64_t deadline)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r;

		if (c->ssl == NULL || SSL_pending(c->ssl) == 0) {
			int w = wait_fd(c, POLLIN, deadline);

			if (w <= 0)
				return -1;
		}
		if (c->ssl != NULL) {
			int k = SSL_read(c->ssl, buf + got, (int)(n - got));

			if (k <= 0) {
				int e = SSL_get_error(c->ssl, k);

				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
					continue;
				return -1;
			}
			r = k;
		} else {
			r = recv(c->fd, buf + got, n - got, 0);
			if (r < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (r <= 0)
				return -1;
		}
		got += (size_t)r;
		if (deadline < 0)
			deadline = mono_ms() + c->timeout_ms;
	}
	return 0;
}

static int write_full(struct conn *c, const unsigned char *buf, size_t n)
{
	size_t put = 0;
	int64_t deadline = mono_ms() + c->timeout_ms;

	while (put < n) {
		ssize_t r;

		if (c->ssl != NULL) {
			int k = SSL_write(c->ssl, buf + put, (int)(n - put));

			if (k <= 0) {
				int e = SSL_get_error(c->ssl, k);

				if ((e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) &&
				    wait_fd(c, e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN,
					    deadline) > 0)
					continue;
				return -1;
			}
			r = k;
		} else {
			r = send(c->fd, buf + put, n - put, MSG_NOSIGNAL);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && errno == EAGAIN && wait_fd(c, POLLOUT, deadline) > 0)
				continue;
			if (r <= 0)
				return -1;
		}
		put += (size_t)r;
	}
	return 0;
}

static void conn_serve(struct conn *c)
{
	unsigned char hdr[4];
	unsigned char *body = NULL;
	sc_buf out;
	uint32_t len;
	int first = 1, r;

	sc_wire_out_init(&out);
	for (;;) {
		/* HELLO within the timeout; later frames may wait for ever. */
		if (read_full(c, hdr, 4, first ? mono_ms() + c->timeout_ms : -1) != 0)
			break;
		len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
		      ((uint32_t)hdr[2] << 8) | hdr[3];
		if (len < 2 || len > SC_WIRE_FRAME_MAX)
			break;
		body = malloc(len);
		if (body == NULL)
			break;
		if (read_full(c, body, len, mono_ms() + c->timeout_ms) != 0)
			break;
		first = 0;
		r = sd_dispatch(&c->s, body, len, &out);
		OPENSSL_clear_free(body, len);
		body = NULL;
		if (r == SD_DISPATCH_CLOSE)
			break;
		if (write_full(c, out.buf, out.len) != 0 || r == SD_DISPATCH_CLOSE_AFTER)
			break;
		if (out.cap > 64 * 1024)
			sc_buf_free(&out);   /* keep idle connections small */
	}
	if (body != NULL)
		OPENSSL_clear_free(body, len);
	sc_buf_free(&out);
}

/* Identity of a TLS peer: SHA-256 of its verified certificate. */
static int tls_identity(struct conn *c, char *principal, size_t plen)
{
	X509 *x = SSL_get1_peer_certificate(c->ssl);
	unsigned char md[SHA256_DIGEST_LENGTH];
	unsigned int mdlen = 0;
	char hex[2 * SHA256_DIGEST_LENGTH + 1];
	int ok;

	if (x == NULL)
		return -1;
	ok = X509_digest(x, EVP_sha256(), md, &mdlen) == 1 && mdlen == sizeof(md);
	X509_free(x);
	if (!ok || SSL_get_verify_result(c->ssl) != X509_V_OK)
		return -1;
	sc_hex_encode(md, 16, hex);
	snprintf(principal, plen, "cert=%s", hex);
	return 0;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct done_thread *done;
	int ok = 1;

	if (c->ssl != NULL) {
		int64_t deadline = mono_ms() + c->timeout_ms;
		char addr[64] = "?";
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		for (;;) {
			int k = SSL_accept(c->ssl), e;

			if (k == 1)
				break;
			e = SSL_get_error(c->ssl, k);
			if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
			    wait_fd(c, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) > 0)
				continue;
			ok = 0;
			break;
		}
		if (ok && tls_identity(c, c->s.principal, sizeof(c->s.principal)) != 0)
			ok = 0;
		if (ok) {
			if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0 &&
			    getnameinfo((struct sockaddr *)&ss, sl, addr, sizeof(addr), NULL, 0,
					NI_NUMERICHOST) != 0)
				snprintf(addr, sizeof(addr), "?");
			snprintf(c->s.peer, sizeof(c->s.peer), "%.48s addr=%.40s", c->s.principal, addr);
		} else if (sd.debug) {
			sd_log("TLS client refused in the handshake");
		}
	}
	if (ok)
		conn_serve(c);
	sd_session_end(&c->s);
	if (c->ssl != NULL) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	close(c->fd);
	done = c->done;
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
	done->th = pthread_self();
	pthread_mutex_lock(&srv.lock);
	done->next = srv.finished;
	srv.finished = done;
	srv.active--;
	pthread_cond_broadcast(&srv.idle);
	pthread_mutex_unlock(&srv.lock);
	return NULL;
}

/* Join the connection threads that have finished. */
static void reap_finished(void)
{
	struct done_thread *list, *next;

	pthread_mutex_lock(&srv.lock);
	list = srv.finished;
	srv.finished = NULL;
	pthread_mutex_unlock(&srv.lock);
	for (; list != NULL; list = next) {
		next = list->next;
		pthread_join(list->th, NULL);
		free(list);
	}
}

/* Accept one connection on listener fd; tls says which kind. */
static void accept_one(int lfd, int tls, volatile sig_atomic_t *stop)
{
	struct conn *c = NULL;
	pthread_attr_t attr;
	pthread_t th;
	int fd;

	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	pthread_mutex_lock(&srv.lock);
	if ((int64_t)srv.active >= srv.max_conns) {
		pthread_mutex_unlock(&srv.lock);
		close(fd);
		return;
	}
	srv.active++;
	pthread_mutex_unlock(&srv.lock);
	c = calloc(1, sizeof(*c));
	if (c == NULL || (c->done = calloc(1, sizeof(*c->done))) == NULL)
		goto out;
	c->fd = fd;
	c->stop = stop;
	c->timeout_ms = srv.timeout_ms;
	if (tls) {
		int one = 1;

		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->ssl = SSL_new(srv.tls);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1)
			goto out;
	} else {
		struct ucred cr;
		socklen_t cl = sizeof(cr);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0)
			goto out;
		snprintf(c->s.principal, sizeof(c->s.principal), "uid=%u", (unsigned)cr.uid);
		snprintf(c->s.peer, sizeof(c->s.peer), "uid=%u pid=%ld", (unsigned)cr.uid,
			 (long)cr.pid);
	}
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 512 * 1024);
	if (pthread_create(&th, &attr, conn_main, c) != 0) {
		pthread_attr_destroy(&attr);
		goto out;
	}
	pthread_attr_destroy(&attr);
	return;
out:
	if (c != NULL) {
		SSL_free(c->ssl);
		free(c->done);
		free(c);
	}
	close(fd);
	pthread_mutex_lock(&srv.lock);
	srv.active--;
	pthread_mutex_unlock(&srv.lock);
}

static int listen_unix(const sc_config *cfg, int *out, char **path_out)
{
	char *path = sc_config_path(cfg, "signd.socket", "run/signd.sock");
	const char *mode_s = sc_config_str(cfg, "signd.socket_mode", "0660");
	const char *group = sc_config_str(cfg, "signd.socket_group", NULL);
	struct sockaddr_un sa;
	char *dir = NULL, *slash;
	unsigned long mode;
	char *end = NULL;
	int fd = -1, rc = SC_OK;

	*out = -1;
	if (path == NULL)
		return SC_ERR_NOMEM;
	mode = strtoul(mode_s, &end, 8);
	if (end == mode_s || *end != '\0' || mode > 0777 || (mode & 0111) != 0) {
		rc = sc_error_set(SC_ERR_CONFIG, "signd.socket_mode '%s' is not an octal mode "
				  "like 0660", mode_s);
		goto out;
	}
	if (strlen(path) >= sizeof(sa.sun_path)) {
		rc = sc_error_set(SC_ERR_CONFIG, "signd.socket path '%s' is too long for a Unix "
				  "socket (at most %zu bytes)", path, sizeof(sa.sun_path) - 1);
		goto out;
	}
	dir = strdup(path);
	if (dir == NULL) {
		rc = SC_ERR_NOMEM;
		goto out;
	}
	slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
			rc = sc_error_set(SC_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
			goto out;
		}
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		rc = sc_error_set(SC_ERR_IO, "socket: %s", strerror(errno));
		goto out;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	(void)unlink(path);    /* a stale socket of an earlier run */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 256) != 0) {
		rc = sc_error_set(SC_ERR_IO, "cannot listen on %s: %s", path, strerror(errno));
		goto out;
	}
	if (group != NULL) {
		struct group *g = getgrnam(group);

		if (g == NULL || chown(path, (uid_t)-1, g->gr_gid) != 0) {
			rc = sc_error_set(SC_ERR_CONFIG, "signd.socket_group '%s': %s", group,
					  g == NULL ? "no such group" : strerror(errno));
			goto out;
		}
	}
	if (chmod(path, (mode_t)mode) != 0) {
		rc = sc_error_set(SC_ERR_IO, "chmod %s: %s", path, strerror(errno));
		goto out;
	}
	*out = fd;
	fd = -1;
	*path_out = path;
	path = NULL;
out:
	if (fd >= 0)
		close(fd);
	free(dir);
	free(path);
	return rc;
}

static int listen_tcp(const char *spec, int *out)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	struct addrinfo hints, *ai = NULL;
	int fd = -1, one = 1, rc = SC_OK;
	size_t hl;

	*out = -1;
	if (colon == NULL || colon == spec || colon[1] == '\0' ||
	    (hl = (size_t)(colon - spec)) >= sizeof(host))
		return sc_error_set(SC_ERR_CONFIG, "signd.tls_listen '%s' must be HOST:PORT", spec);
	memcpy(host, spec, hl);
	host[hl] = '\0';
	if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || ai == NULL)
		return sc_error_set(SC_ERR_CONFIG, "signd.tls_listen '%s': cannot resolve", spec);
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 256) != 0) {
		rc = sc_error_set(SC_ERR_IO, "cannot listen on %s: %s", spec, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	*out = fd;
	return rc;
}

static int tls_setup(const sc_config *cfg)
{
	char *cert = sc_config_path(cfg, "signd.tls_cert", NULL);
	char *key = sc_config_path(cfg, "signd.tls_key", NULL);
	char *ca = sc_config_path(cfg, "signd.tls_client_ca", NULL);
	int rc = SC_OK;

	if (cert == NULL || key == NULL || ca == NULL) {
		rc = sc_error_set(SC_ERR_CONFIG, "signd.tls_listen needs signd.tls_cert, "
				  "signd.tls_key and signd.tls_client_ca (the CA that issues "
				  "gateway client certificates)");
		goto out;
	}
	srv.tls = SSL_CTX_new(TLS_server_method());
	if (srv.tls == NULL || SSL_CTX_set_min_proto_version(srv.tls, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_use_certificate_chain_file(srv.tls, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(srv.tls, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(srv.tls) != 1 ||
	    SSL_CTX_load_verify_locations(srv.tls, ca, NULL) != 1) {
		char what[1024];

		snprintf(what, sizeof(what), "cannot set up TLS from signd.tls_cert %s, "
			 "signd.tls_key %s and signd.tls_client_ca %s", cert, key, ca);
		rc = sc_error_set_openssl(SC_ERR_CONFIG, what);
		goto out;
	}
	/* A client without a certificate from the gateway CA is refused in
	 * the handshake, before any request is read. */
	SSL_CTX_set_verify(srv.tls, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_session_cache_mode(srv.tls, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(srv.tls, 0);
out:
	free(cert);
	free(key);
	free(ca);
	return rc;
}

int sc_signd_serve(volatile sig_atomic_t *stop)
{
	const sc_config *cfg = sc_signd_config();
	const char *tls_spec;
	struct pollfd p[2];
	int nl = 0, i, rc;
	int64_t tmo = 0;
	char *sock_path = NULL;

	if (cfg == NULL)
		return sc_error_set(SC_ERR_INVALID, "the service is not open");
	if (sc_config_int(cfg, "signd.max_connections", 1024, &srv.max_conns) != SC_OK ||
	    srv.max_conns < 1 || srv.max_conns > 65536)
		return sc_error_set(SC_ERR_CONFIG, "signd.max_connections must be 1..65536");
	if (sc_config_int(cfg, "signd.request_timeout", 10, &tmo) != SC_OK || tmo < 1 ||
	    tmo > 3600)
		return sc_error_set(SC_ERR_CONFIG, "signd.request_timeout must be 1..3600 seconds");
	srv.timeout_ms = tmo * 1000;
	rc = listen_unix(cfg, &p[0].fd, &sock_path);
	if (rc != SC_OK)
		return rc;
	p[0].events = POLLIN;
	nl = 1;
	tls_spec = sc_config_str(cfg, "signd.tls_listen", NULL);
	if (tls_spec != NULL) {
		rc = tls_setup(cfg);
		if (rc == SC_OK)
			rc = listen_tcp(tls_spec, &p[1].fd);
		if (rc != SC_OK) {
			close(p[0].fd);
			(void)unlink(sock_path);
			free(sock_path);
			return rc;
		}
		p[1].events = POLLIN;
		nl = 2;
	}
	while (!__atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
		int r = poll(p, (nfds_t)nl, 500);

		if (r < 0 && errno != EINTR)
			break;
		reap_finished();
		sd_checkpoint_tick(0);
		sd_hsm_tick();
		for (i = 0; r > 0 && i < nl; i++)
			if (p[i].revents & POLLIN)
				accept_one(p[i].fd, i == 1, stop);
	}
	for (i = 0; i < nl; i++)
		close(p[i].fd);
	(void)unlink(sock_path);
	free(sock_path);
	/* Every connection sees *stop within a second and ends. */
	pthread_mutex_lock(&srv.lock);
	while (srv.active > 0)
		pthread_cond_wait(&srv.idle, &srv.lock);
	pthread_mutex_unlock(&srv.lock);
	reap_finished();
	sd_checkpoint_tick(1);
	SSL_CTX_free(srv.tls);
	srv.tls = NULL;
	return SC_OK;
}
