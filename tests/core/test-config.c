/*
 * Configuration parsing: sections, repeated keys, sizes, booleans, paths and
 * syntax errors reported with their line numbers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tcheck.h"

#include "sc_config.h"
#include "sc_util.h"

static char *write_conf(const char *dir, const char *name, const char *text)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	REQUIRE(p != NULL);
	snprintf(p, n, "%s/%s", dir, name);
	REQUIRE(sc_file_write_atomic(p, text, strlen(text), 0600) == SC_OK);
	return p;
}

static void expect_syntax_error(const char *dir, const char *text, const char *where)
{
	sc_config *cfg = NULL;
	char *p = write_conf(dir, "bad.conf", text);

	CHECK_RC(sc_config_load(p, &cfg), SC_ERR_CONFIG);
	CHECK(cfg == NULL);
	if (strstr(sc_error_detail(), where) == NULL) {
		fprintf(stderr, "detail '%s' lacks '%s'\n", sc_error_detail(), where);
		tcheck_failures++;
	}
	free(p);
}

static void test_parse(const char *dir)
{
	char *p, *path;
	sc_config *cfg = NULL;
	const char *const *list;
	int64_t v;
	int b;
	size_t n;

	p = write_conf(dir, "smartcert.conf",
		       "\xef\xbb\xbf# comment after a byte order mark\n"
		       "[deployment]\n"
		       "name = demo deployment\n"
		       "\n"
		       "[store]\n"
		       "path = store\n"
		       "map_size = 64G\n"
		       "  ; another comment\n"
		       "[authz]\n"
		       "trusted_key = a.pem\n"
		       "trusted_key = /etc/b.pem\n"
		       "max_skew=120\r\n"
		       "quoted = \"  padded  \"\n"
		       "empty =\n"
		       "[ca]\n"
		       "suspend_holds = Yes\n"
		       "validity_days = 18x\n"
		       "partitions = 16k\n"
		       "neg = -3\n");
	CHECK_RC(sc_config_load(p, &cfg), SC_OK);
	REQUIRE(cfg != NULL);
	CHECK(strcmp(sc_config_str(cfg, "deployment.name", NULL), "demo deployment") == 0);
	CHECK(strcmp(sc_config_str(cfg, "missing.key", "def"), "def") == 0);
	CHECK(sc_config_str(cfg, "store.nokey", NULL) == NULL);
	CHECK_RC(sc_config_int(cfg, "store.map_size", 0, &v), SC_OK);
	CHECK(v == 64ll << 30);
	CHECK_RC(sc_config_int(cfg, "authz.max_skew", 0, &v), SC_OK);
	CHECK(v == 120);
	CHECK_RC(sc_config_int(cfg, "ca.partitions", 0, &v), SC_OK);
	CHECK(v == 16 * 1024);
	CHECK_RC(sc_config_int(cfg, "ca.neg", 0, &v), SC_OK);
	CHECK(v == -3);
	CHECK_RC(sc_config_int(cfg, "ca.validity_days", 7, &v), SC_ERR_CONFIG);
	CHECK(strstr(sc_error_detail(), "ca.validity_days") != NULL);
	CHECK_RC(sc_config_int(cfg, "ca.absent", 7, &v), SC_OK);
	CHECK(v == 7);
	CHECK_RC(sc_config_bool(cfg, "ca.suspend_holds", 0, &b), SC_OK);
	CHECK(b == 1);
	CHECK_RC(sc_config_bool(cfg, "deployment.name", 0, &b), SC_ERR_CONFIG);
	CHECK_RC(sc_config_bool(cfg, "ca.absent", 1, &b), SC_OK);
	CHECK(b == 1);
	CHECK(strcmp(sc_config_str(cfg, "authz.quoted", NULL), "  padded  ") == 0);
	CHECK(strcmp(sc_config_str(cfg, "authz.empty", NULL), "") == 0);
	list = sc_config_list(cfg, "authz.trusted_key", &n);
	CHECK(n == 2 && strcmp(list[0], "a.pem") == 0 && strcmp(list[1], "/etc/b.pem") == 0);
	CHECK(strcmp(sc_config_str(cfg, "authz.trusted_key", NULL), "/etc/b.pem") == 0);
	list = sc_config_list(cfg, "authz.none", &n);
	CHECK(n == 0 && list != NULL);
	path = sc_config_path(cfg, "store.path", NULL);
	CHECK(path != NULL && strncmp(path, sc_config_dir(cfg), strlen(sc_config_dir(cfg))) == 0);
	CHECK(path != NULL && strcmp(path + strlen(sc_config_dir(cfg)), "/store") == 0);
	free(path);
	path = sc_config_path(cfg, "store.absent", NULL);
	CHECK(path == NULL);
	path = sc_config_path(cfg, "store.absent", "/abs/x");
	CHECK(path != NULL && strcmp(path, "/abs/x") == 0);
	free(path);
	CHECK(sc_config_file(cfg)[0] == '/' && strstr(sc_config_file(cfg), "smartcert.conf"));
	sc_config_free(cfg);
	cfg = NULL;

	setenv("SMARTCERT_CONF", p, 1);
	CHECK(sc_config_locate(NULL) != NULL && strcmp(sc_config_locate(NULL), p) == 0);
	CHECK(strcmp(sc_config_locate("x.conf"), "x.conf") == 0);
	unsetenv("SMARTCERT_CONF");
	CHECK(sc_config_locate(NULL) == NULL);
	free(p);

	expect_syntax_error(dir, "[store]\npath = x\njust words\n", ":3:");
	expect_syntax_error(dir, "key = before section\n", ":1:");
	expect_syntax_error(dir, "[store]\n\n\n[broken\n", ":4:");
	expect_syntax_error(dir, "[]\n", ":1:");
	expect_syntax_error(dir, "[a]\nb c = d\n", ":2:");
	expect_syntax_error(dir, "[a]\n= d\n", ":2:");
	expect_syntax_error(dir, "[a]\nx = \"unterminated\n", ":2:");
	CHECK_RC(sc_config_load("/nonexistent/smartcert.conf", &cfg), SC_ERR_IO);
	CHECK(cfg == NULL);
}

static const struct tcheck_case cases[] = {
	TCASE(parse),
};

int main(int argc, char **argv)
{
	return tcheck_main(argc, argv, "config", cases, TCHECK_N(cases), NULL);
}
