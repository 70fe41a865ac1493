/*
 * The module's connections to the signing service.
 *
 * gateway.service names it: "unix:PATH" (the default is run/signd.sock
 * beside the configuration), or "tls:HOST:PORT" with gateway.tls_cert,
 * gateway.tls_key (this gateway's client certificate and key) and
 * gateway.tls_ca (the CA of the service's certificate).  Every wait is
 * bounded by gateway.timeout: a service that stops answering gives
 * CKR_DEVICE_REMOVED, never a hang.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "internal.h"

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* OpenSSL writes to its socket with write(2), which raises SIGPIPE once the
 * service has gone, and the default action kills the gateway.  A library
 * must neither die of it nor change its host's handlers, so SIGPIPE is
 * blocked in the calling thread around each TLS call, and one that the
 * call raised is taken back before the mask is restored. */
struct sigpipe_guard {
	sigset_t old;
	int was_pending;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t pipe, pending;

	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, &g->old);
}

static void sigpipe_restore(const struct sigpipe_guard *g)
{
	sigset_t pipe, pending;
	struct timespec zero = { 0, 0 };
	int saved = errno;

	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	if (!g->was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE))
		while (sigtimedwait(&pipe, NULL, &zero) < 0 && errno == EINTR)
			;
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
	errno = saved;
}

static int wait_fd(int fd, short ev, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = ev };
	int64_t left;
	int r;

	for (;;) {
		left = deadline - mono_ms();
		if (left <= 0)
			return 0;
		r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		return r;
	}
}

static int connect_unix(const char *path, int64_t deadline)
{
	struct sockaddr_un sa;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		p11_log("gateway.service path %s is too long", path);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	/* EAGAIN from a Unix socket is a full listen backlog (many sessions
	 * opened at once), not a connection in progress: try again until
	 * the deadline. */
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN && mono_ms() < deadline) {
			struct timespec pause = { 0, 2000000 };

			nanosleep(&pause, NULL);
			continue;
		}
		p11_log("cannot reach the signing service at %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int connect_tcp(const char *spec, int64_t deadline)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	struct addrinfo hints, *ai = NULL;
	int fd = -1, one = 1, err = 0;
	socklen_t el = sizeof(err);
	size_t hl;

	if (colon == NULL || (hl = (size_t)(colon - spec)) == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, spec, hl);
	host[hl] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || ai == NULL) {
		p11_log("cannot resolve the signing service %s", spec);
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd >= 0) {
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 &&
		    (errno != EINPROGRESS || wait_fd(fd, POLLOUT, deadline) <= 0 ||
		     getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0)) {
			p11_log("cannot reach the signing service at %s: %s", spec,
				strerror(err ? err : errno));
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(ai);
	return fd;
}

static int io_full(struct p11_conn *c, void *buf, size_t n, int writing, int64_t deadline)
{
	unsigned char *p = buf;
	size_t done = 0;

	while (done < n) {
		ssize_t r;
		short ev = writing ? POLLOUT : POLLIN;

		if (c->ssl != NULL) {
			struct sigpipe_guard g;
			int k;

			sigpipe_block(&g);
			k = writing ? SSL_write(c->ssl, p + done, (int)(n - done))
				    : SSL_read(c->ssl, p + done, (int)(n - done));
			sigpipe_restore(&g);
			if (k <= 0) {
				int e = SSL_get_error(c->ssl, k);

				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
					if (wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
						    deadline) <= 0)
						return -1;
					continue;
				}
				return -1;
			}
			r = k;
		} else {
			r = writing ? send(c->fd, p + done, n - done, MSG_NOSIGNAL)
				    : recv(c->fd, p + done, n - done, 0);
			if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
				if (wait_fd(c->fd, ev, deadline) <= 0)
					return -1;
				continue;
			}
			if (r <= 0)
				return -1;
		}
		done += (size_t)r;
	}
	return 0;
}

sc_buf *p11_req(struct p11_conn *c, unsigned op)
{
	sc_wire_out_frame(&c->out);
	sc_buf_u16(&c->out, (uint16_t)op);
	return &c->out;
}

CK_RV p11_call(struct p11_conn *c, CK_RV *rv, sc_in *in)
{
	int64_t deadline = mono_ms() + p11.timeout_ms;
	unsigned char hdr[4];
	uint32_t len;

	*rv = CKR_DEVICE_REMOVED;
	if (c->broken)
		return CKR_DEVICE_REMOVED;
	if (!sc_wire_out_finish(&c->out))
		return CKR_ARGUMENTS_BAD;        /* larger than a frame */
	if (io_full(c, c->out.buf, c->out.len, 1, deadline) != 0 ||
	    io_full(c, hdr, 4, 0, deadline) != 0)
		goto broken;
	len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) |
	      hdr[3];
	if (len < 4 || len > SC_WIRE_FRAME_MAX)
		goto broken;
	if (len > c->resp_cap) {
		unsigned char *nb = malloc(len);

		if (nb == NULL)
			return CKR_HOST_MEMORY;
		if (c->resp != NULL)
			OPENSSL_clear_free(c->resp, c->resp_cap);
		c->resp = nb;
		c->resp_cap = len;
	}
	if (io_full(c, c->resp, len, 0, deadline) != 0)
		goto broken;
	c->resp_len = len;
	sc_in_init(in, c->resp, len);
	*rv = sc_in_u32(in);
	return CKR_OK;
broken:
	p11_log("the signing service closed the connection or did not answer in time");
	c->broken = 1;
	return CKR_DEVICE_REMOVED;
}

static CK_RV tls_connect(struct p11_conn *c, const char *spec, int64_t deadline)
{
	const char *colon = strrchr(spec, ':');
	char host[256];
	size_t hl = colon != NULL ? (size_t)(colon - spec) : 0;

	if (p11.tls == NULL || hl == 0 || hl >= sizeof(host))
		return CKR_DEVICE_ERROR;
	memcpy(host, spec, hl);
	host[hl] = '\0';
	c->ssl = SSL_new(p11.tls);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
	    SSL_set1_host(c->ssl, host) != 1)
		return CKR_HOST_MEMORY;
	for (;;) {
		struct sigpipe_guard g;
		int k, e;

		sigpipe_block(&g);
		k = SSL_connect(c->ssl);
		sigpipe_restore(&g);

		if (k == 1)
			return CKR_OK;
		e = SSL_get_error(c->ssl, k);
		if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
		    wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) > 0)
			continue;
		p11_log("TLS handshake with the signing service %s failed (%s)", spec,
			ERR_reason_error_string(ERR_peek_last_error()) != NULL
				? ERR_reason_error_string(ERR_peek_last_error())
				: "closed");
		ERR_clear_error();
		return CKR_DEVICE_ERROR;
	}
}

/* A connection to service i, within the deadline. */
static CK_RV conn_open_one(struct p11_conn *c, int i, int64_t deadline)
{
	const char *svc = p11.service[i];
	CK_RV rv;

	if (strncmp(svc, "unix:", 5) == 0)
		c->fd = connect_unix(svc + 5, deadline);
	else if (strncmp(svc, "tls:", 4) == 0)
		c->fd = connect_tcp(svc + 4, deadline);
	if (c->fd < 0)
		return CKR_DEVICE_ERROR;
	if (strncmp(svc, "tls:", 4) == 0) {
		rv = tls_connect(c, svc + 4, deadline);
		if (rv != CKR_OK) {
			SSL_free(c->ssl);
			c->ssl = NULL;
			close(c->fd);
			c->fd = -1;
			return rv;
		}
	}
	return CKR_OK;
}

/*
 * Every service the configuration names, from the one that answered last:
 * a gateway whose service has died reaches the next one with its next
 * session.  The state of a session lives in its service, so a session
 * whose connection broke stays broken (CKR_DEVICE_REMOVED): the gateway
 * opens a new one.
 */
CK_RV p11_conn_open(struct p11_conn *c, CK_FLAGS flags)
{
	int first = p11.service_next, k, i;
	CK_RV rv = CKR_DEVICE_ERROR;

	for (k = 0; k < p11.n_services; k++) {
		i = (first + k) % p11.n_services;
		memset(c, 0, sizeof(*c));
		c->fd = -1;
		sc_wire_out_init(&c->out);
		rv = conn_open_one(c, i, mono_ms() + p11.timeout_ms);
		if (rv != CKR_OK) {
			p11_conn_close(c, 1);
			continue;
		}
		/* a dying service may still take connections it cannot answer:
		 * a failed HELLO (which closes the connection) moves on too */
		if ((rv = p11_hello(c, flags)) == CKR_OK) {
			if (i != first)
				p11.service_next = i;
			return CKR_OK;
		}
	}
	return rv;
}

void p11_conn_close(struct p11_conn *c, int owned)
{
	if (owned && c->ssl != NULL) {
		if (!c->broken) {
			struct sigpipe_guard g;

			sigpipe_block(&g);
			SSL_shutdown(c->ssl);
			sigpipe_restore(&g);
		}
		SSL_free(c->ssl);
	}
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (owned) {
		sc_buf_free(&c->out);
		if (c->resp != NULL)
			OPENSSL_clear_free(c->resp, c->resp_cap);
	}
	c->resp = NULL;
	c->resp_cap = c->resp_len = 0;
}
