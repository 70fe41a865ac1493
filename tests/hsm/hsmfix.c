/* Test fixture: a fresh SoftHSMv2 token per test process. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hsmfix.h"
#include "sc_build_config.h"
#include "sc_err.h"
#include "sc_util.h"

void hsmfix_write(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	size_t n = strlen(text);

	REQUIRE(fd >= 0, "open %s: %s", path, strerror(errno));
	REQUIRE(write(fd, text, n) == (ssize_t)n, "write %s", path);
	close(fd);
}

int hsmfix_is_nss(void)
{
	const char *b = getenv("SC_TEST_BACKEND");

	return b != NULL && strcmp(b, "nss") == 0;
}

void hsmfix_setup(hsmfix *fx, const char *name)
{
	const char *base = getenv("SMARTCERT_BUILDDIR");
	char tokens[PATH_MAX + 16], text[PATH_MAX + 128], parent[PATH_MAX];
	sc_hsm_params *p;
	int rc;

	memset(fx, 0, sizeof(*fx));
	/* Never the user's SoftHSMv2 configuration. */
	unsetenv("SOFTHSM2_CONF");
	fx->backend = hsmfix_is_nss() ? "nss" : "softhsm2";
	fx->module = getenv("SC_TEST_BACKEND_MODULE");
	if (!fx->module || !*fx->module)
		fx->module = hsmfix_is_nss() ? SC_DEFAULT_NSS_MODULE : SC_DEFAULT_BACKEND_MODULE;
	if (!*fx->module || access(fx->module, R_OK) != 0) {
		fprintf(stderr, "SKIP: %s module not found ('%s')\n", fx->backend, fx->module);
		exit(77);
	}
	snprintf(fx->dir, sizeof(fx->dir), "%s/tests/hsm/tmp-%s-XXXXXX",
		 base && *base ? base : ".", name);
	snprintf(parent, sizeof(parent), "%s/tests/hsm", base && *base ? base : ".");
	REQUIRE(sc_mkdir_p(parent, 0700) == 0, "mkdir %s", parent);
	REQUIRE(mkdtemp(fx->dir) != NULL, "mkdtemp %s: %s", fx->dir, strerror(errno));
	if (hsmfix_is_nss()) {
		snprintf(fx->nss_dir, sizeof(fx->nss_dir), "%s/nssdb", fx->dir);
	} else {
		snprintf(tokens, sizeof(tokens), "%s/tokens", fx->dir);
		REQUIRE(mkdir(tokens, 0700) == 0, "mkdir %s", tokens);
		snprintf(fx->conf, sizeof(fx->conf), "%s/softhsm2.conf", fx->dir);
		snprintf(text, sizeof(text),
			 "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
			 tokens);
		hsmfix_write(fx->conf, text);
	}
	snprintf(fx->pin_file, sizeof(fx->pin_file), "%s/user.pin", fx->dir);
	hsmfix_write(fx->pin_file, HSMFIX_USER_PIN "\n");
	snprintf(fx->pin_source, sizeof(fx->pin_source), "file:%s", fx->pin_file);

	p = calloc(1, sizeof(*p));
	REQUIRE(p != NULL, "calloc");
	hsmfix_params(fx, p, 0);
	rc = sc_hsm_init_token(p, HSMFIX_LABEL, HSMFIX_SO_PIN, HSMFIX_USER_PIN);
	free(p);
	REQUIRE(rc == 0, "sc_hsm_init_token: %d (%s)", rc, sc_error_detail());
}

void hsmfix_params(const hsmfix *fx, sc_hsm_params *p, unsigned sessions)
{
	memset(p, 0, sizeof(*p));
	p->module_path = fx->module;
	p->token_uri = "pkcs11:token=" HSMFIX_LABEL;
	p->pin_source = fx->pin_source;
	p->backend = fx->backend;
	if (fx->nss_dir[0] != '\0')
		p->nss_dir = fx->nss_dir;
	else
		p->softhsm_conf = fx->conf;
	p->sessions = sessions;
}

void hsmfix_key_new(sc_hsm *hsm, int alg, hsmfix_key *k)
{
	int rc;

	memset(k, 0, sizeof(*k));
	k->alg = alg;
	rc = sc_hsm_generate_wrapped(hsm, alg, &k->blob, &k->blob_len, &k->spki, &k->spki_len);
	REQUIRE(rc == 0, "a wrapped %s key: %d", sc_keyalg_name(alg), rc);
}

int hsmfix_key_unwrap(sc_hsm *hsm, const hsmfix_key *k, sc_hsm_key **out)
{
	return sc_hsm_unwrap(hsm, k->alg, k->blob, k->blob_len, out);
}

void hsmfix_key_free(hsmfix_key *k)
{
	free(k->blob);
	free(k->spki);
	memset(k, 0, sizeof(*k));
}

sc_hsm *hsmfix_open(const hsmfix *fx, unsigned sessions)
{
	sc_hsm_params *p = calloc(1, sizeof(*p));
	sc_hsm *hsm = NULL;
	int rc;

	REQUIRE(p != NULL, "calloc");
	hsmfix_params(fx, p, sessions);
	rc = sc_hsm_open(p, &hsm);
	free(p);
	REQUIRE(rc == 0 && hsm, "sc_hsm_open: %d", rc);
	return hsm;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void hsmfix_teardown(hsmfix *fx)
{
	if (tcheck_failures || getenv("SC_TEST_KEEP")) {
		fprintf(stderr, "kept %s\n", fx->dir);
		return;
	}
	nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
