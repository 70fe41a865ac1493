/*
 * smartcert approve: deposit an authorisation token with the signing
 * service ahead of its signature (docs/gateway-integration.md, "Deposits").
 *
 * It connects as a gateway, exactly as the PKCS#11 module does (the
 * gateway configuration's service, TLS client certificate where the
 * service is remote, then the gateway credential as CKU_USER), and sends
 * one DEPOSIT request (signd/sc_wire.h).  A client whose PKCS#11 API cannot
 * present a token per signature (Java's SunPKCS11, OpenSSL's engine,
 * GnuTLS p11tool) then signs with plain C_SignInit + C_Sign.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "pkcs11_v3.h"
#include "sc_cli.h"
#include "sc_config.h"
#include "sc_err.h"
#include "sc_util.h"
#include "sc_wire.h"

#define APPROVE_TIMEOUT_S 30

struct approve_conn {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
};

static void approve_usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert approve --token T|@FILE|- [--for GATEWAY]\n"
		"                         [--gateway-pin-source file:PATH|env:VAR]\n"
		"Deposit an authorisation token with the signing service, so that a plain\n"
		"C_SignInit + C_Sign by the gateway (or by --for GATEWAY) consumes it.\n"
		"  --token T     the token text; @FILE reads it from a file, - from stdin\n"
		"  --for GW      the gateway that may consume it (default: this one)\n"
		"  --gateway-pin-source  this gateway's credential (default gateway.pin_source,\n"
		"                then gateway/default.pin beside the configuration)\n"
		"The service is the configuration's gateway.service ($SMARTCERT_CONF).\n"
		"Exit: 0 deposited, 2 usage, 4 refused (the reason is printed), 6 configuration,\n"
		"1 the service cannot be reached.\n");
}

static int read_token(const char *arg, char **out)
{
	char buf[SC_WIRE_TOKEN_MAX + 2];
	FILE *f = NULL;
	size_t n;

	*out = NULL;
	if (arg[0] != '@' && strcmp(arg, "-") != 0) {
		*out = OPENSSL_strdup(arg);
		return *out != NULL ? SC_OK : SC_ERR_NOMEM;
	}
	f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "r");
	if (f == NULL)
		return sc_error_set(SC_ERR_IO, "cannot read %s: %s", arg + 1, strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	if (f != stdin)
		fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	*out = OPENSSL_strdup(buf);
	OPENSSL_cleanse(buf, sizeof(buf));
	return *out != NULL ? SC_OK : SC_ERR_NOMEM;
}

static int conn_open(const sc_config *cfg, struct approve_conn *c)
{
	const char *svc = sc_config_str(cfg, "gateway.service", "unix:run/signd.sock");
	struct timeval tv = { APPROVE_TIMEOUT_S, 0 };

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	if (strncmp(svc, "unix:", 5) == 0) {
		struct sockaddr_un sa;
		int n;

		memset(&sa, 0, sizeof(sa));
		sa.sun_family = AF_UNIX;
		n = svc[5] == '/' ? snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", svc + 5) :
				    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s",
					     sc_config_dir(cfg), svc + 5);
		if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
			return sc_error_set(SC_ERR_CONFIG, "gateway.service: path too long");
		c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
			return sc_error_set(SC_ERR_IO, "cannot connect to %s: %s", sa.sun_path,
					    strerror(errno));
	} else if (strncmp(svc, "tls:", 4) == 0) {
		const char *colon = strrchr(svc + 4, ':');
		char host[256];
		struct addrinfo hints, *ai = NULL, *p;
		char *cert, *key, *ca;
		size_t hl = colon != NULL ? (size_t)(colon - (svc + 4)) : 0;
		int ok;

		if (hl == 0 || hl >= sizeof(host))
			return sc_error_set(SC_ERR_CONFIG, "gateway.service: tls:HOST:PORT");
		memcpy(host, svc + 4, hl);
		host[hl] = '\0';
		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
			return sc_error_set(SC_ERR_CONFIG, "cannot resolve %s", host);
		for (p = ai; p != NULL; p = p->ai_next) {
			c->fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
			if (c->fd >= 0 && connect(c->fd, p->ai_addr, p->ai_addrlen) == 0)
				break;
			if (c->fd >= 0)
				close(c->fd);
			c->fd = -1;
		}
		freeaddrinfo(ai);
		if (c->fd < 0)
			return sc_error_set(SC_ERR_IO, "cannot connect to %s", svc + 4);
		(void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		(void)setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		cert = sc_config_path(cfg, "gateway.tls_cert", NULL);
		key = sc_config_path(cfg, "gateway.tls_key", NULL);
		ca = sc_config_path(cfg, "gateway.tls_ca", NULL);
		c->ctx = SSL_CTX_new(TLS_client_method());
		ok = cert != NULL && key != NULL && ca != NULL && c->ctx != NULL &&
		     SSL_CTX_set_min_proto_version(c->ctx, TLS1_3_VERSION) == 1 &&
		     SSL_CTX_use_certificate_chain_file(c->ctx, cert) == 1 &&
		     SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) == 1 &&
		     SSL_CTX_load_verify_locations(c->ctx, ca, NULL) == 1;
		free(cert);
		free(key);
		free(ca);
		if (!ok)
			return sc_error_set(SC_ERR_CONFIG,
					    "a tls: service needs gateway.tls_cert, "
					    "gateway.tls_key and gateway.tls_ca, all readable");
		SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
		c->ssl = SSL_new(c->ctx);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
		    SSL_set1_host(c->ssl, host) != 1 || SSL_connect(c->ssl) != 1) {
			ERR_clear_error();
			return sc_error_set(SC_ERR_IO, "TLS handshake with %s failed", svc + 4);
		}
		return SC_OK;
	} else {
		return sc_error_set(SC_ERR_CONFIG, "gateway.service must be unix:PATH or "
						   "tls:HOST:PORT");
	}
	(void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return SC_OK;
}

static void conn_close(struct approve_conn *c)
{
	if (c->ssl != NULL) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
}

static int io_all(struct approve_conn *c, void *buf, size_t n, int wr)
{
	unsigned char *p = buf;

	while (n > 0) {
		ssize_t k;

		if (c->ssl != NULL)
			k = wr ? SSL_write(c->ssl, p, (int)n) : SSL_read(c->ssl, p, (int)n);
		else
			k = wr ? send(c->fd, p, n, MSG_NOSIGNAL) : recv(c->fd, p, n, 0);
		if (k <= 0) {
			if (c->ssl == NULL && k < 0 && errno == EINTR)
				continue;
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Send the frame in `o`, read the answer into *body (freed by the caller). */
static int call(struct approve_conn *c, sc_buf *o, unsigned char **body, size_t *len)
{
	unsigned char hdr[4];
	uint32_t n;

	*body = NULL;
	if (!sc_wire_out_finish(o) || io_all(c, o->buf, o->len, 1) != 0 ||
	    io_all(c, hdr, 4, 0) != 0)
		return sc_error_set(SC_ERR_IO, "the signing service closed the connection");
	n = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
	if (n < 4 || n > SC_WIRE_FRAME_MAX)
		return sc_error_set(SC_ERR_IO, "the signing service sent a broken answer");
	*body = malloc(n);
	if (*body == NULL)
		return SC_ERR_NOMEM;
	if (io_all(c, *body, n, 0) != 0) {
		free(*body);
		*body = NULL;
		return sc_error_set(SC_ERR_IO, "the signing service closed the connection");
	}
	*len = n;
	return SC_OK;
}

int sc_cmd_approve(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "token", required_argument, NULL, 't' },
		{ "for", required_argument, NULL, 'f' },
		{ "gateway-pin-source", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *token_arg = NULL, *for_gw = NULL, *pin_source = NULL;
	unsigned char app_id[SC_WIRE_APP_ID_LEN];
	struct approve_conn c = { .fd = -1 };
	sc_buf o;
	sc_in in;
	sc_config *cfg = NULL;
	unsigned char *body = NULL;
	size_t blen = 0, rlen = 0;
	const unsigned char *reason;
	char *token = NULL, *pin = NULL;
	const char *path;
	uint32_t rv;
	int ch, rc, ret = SC_EXIT_FAIL;

	sc_wire_out_init(&o);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 't':
			token_arg = optarg;
			break;
		case 'f':
			for_gw = optarg;
			break;
		case 'p':
			pin_source = optarg;
			break;
		case 'h':
			approve_usage(stdout);
			return SC_EXIT_OK;
		default:
			approve_usage(stderr);
			return SC_EXIT_USAGE;
		}
	}
	if (optind != argc || token_arg == NULL)
		return sc_cli_usage_error("approve", "--token is required");
	if (for_gw != NULL && (for_gw[0] == '\0' || strlen(for_gw) > SC_WIRE_GATEWAY_MAX))
		return sc_cli_usage_error("approve", "--for: a gateway name");
	path = sc_config_locate(NULL);
	if (path == NULL)
		return sc_cli_usage_error("approve",
					  "no configuration: --config or SMARTCERT_CONF");
	rc = sc_config_load(path, &cfg);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "configuration");
		goto out;
	}
	rc = read_token(token_arg, &token);
	if (rc == SC_OK && (token[0] == '\0' || strlen(token) > SC_WIRE_TOKEN_MAX))
		rc = sc_error_set(SC_ERR_INVALID, "the token is empty or longer than %u bytes",
				  SC_WIRE_TOKEN_MAX);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "token");
		goto out;
	}
	rc = pin_source != NULL ?
		     sc_secret_read_source(pin_source, &pin) :
		     sc_secret_source_read(sc_config_str(cfg, "gateway.pin_source",
							 "file:gateway/default.pin"),
					   sc_config_dir(cfg), SC_SECRET_BARE_PATH, 0, &pin);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "gateway credential");
		goto out;
	}
	rc = conn_open(cfg, &c);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "signing service");
		goto out;
	}
	/* HELLO (version 2: DEPOSIT), LOGIN as the gateway, DEPOSIT. */
	if (RAND_bytes(app_id, sizeof(app_id)) != 1) {
		ret = sc_cli_fail(SC_ERR_CRYPTO, "random");
		goto out;
	}
	sc_wire_out_frame(&o);
	sc_buf_u16(&o, SC_OP_HELLO);
	sc_buf_u32(&o, SC_WIRE_MAGIC);
	sc_buf_u32(&o, SC_WIRE_VERSION);
	sc_buf_blob(&o, app_id, sizeof(app_id));
	sc_buf_u64(&o, CKF_SERIAL_SESSION);
	rc = call(&c, &o, &body, &blen);
	if (rc == SC_OK) {
		sc_in_init(&in, body, blen);
		if (sc_in_u32(&in) != CKR_OK)
			rc = sc_error_set(SC_ERR_CONFIG, "the signing service refused HELLO "
							 "(an older service without deposits?)");
	}
	free(body);
	body = NULL;
	sc_buf_free(&o);
	if (rc == SC_OK) {
		sc_wire_out_init(&o);
		sc_wire_out_frame(&o);
		sc_buf_u16(&o, SC_OP_LOGIN);
		sc_buf_u64(&o, CKU_USER);
		sc_buf_u8(&o, 1);
		sc_buf_blob(&o, pin, strlen(pin));
		rc = call(&c, &o, &body, &blen);
		sc_buf_free(&o);
		if (rc == SC_OK) {
			sc_in_init(&in, body, blen);
			rv = sc_in_u32(&in);
			if (rv != CKR_OK) {
				fprintf(stderr,
					"smartcert approve: the gateway login was refused "
					"(CK_RV 0x%lx): check the gateway credential\n",
					(unsigned long)rv);
				ret = SC_EXIT_STATE;
				goto out;
			}
		}
		OPENSSL_clear_free(body, blen);
		body = NULL;
	}
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "signing service");
		goto out;
	}
	sc_wire_out_init(&o);
	sc_wire_out_frame(&o);
	sc_buf_u16(&o, SC_OP_DEPOSIT);
	sc_buf_blob(&o, token, strlen(token));
	sc_buf_u8(&o, for_gw != NULL);
	sc_buf_blob(&o, for_gw, for_gw != NULL ? strlen(for_gw) : 0);
	rc = call(&c, &o, &body, &blen);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "signing service");
		goto out;
	}
	sc_in_init(&in, body, blen);
	rv = sc_in_u32(&in);
	reason = sc_in_blob(&in, 1024, &rlen);
	if (!sc_in_done(&in)) {
		ret = sc_cli_fail(sc_error_set(SC_ERR_IO, "broken answer"), "signing service");
		goto out;
	}
	if (rv != CKR_OK) {
		fprintf(stderr, "smartcert approve: refused: %.*s (CK_RV 0x%lx)\n", (int)rlen,
			(const char *)reason, (unsigned long)rv);
		ret = SC_EXIT_STATE;
		goto out;
	}
	ret = SC_EXIT_OK;
out:
	conn_close(&c);
	sc_buf_free(&o);
	free(body);
	if (token != NULL)
		OPENSSL_clear_free(token, strlen(token));
	sc_secret_free(pin);
	sc_config_free(cfg);
	return ret;
}
