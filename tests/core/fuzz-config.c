/*
 * Fuzz target for the configuration parser: LLVMFuzzerTestOneInput over
 * sc_config_parse() (the parser behind sc_config_load()), then every typed
 * getter on every key the product reads and on every key the input names.
 *
 * Invariants (abort when one fails):
 *  - a refused input gives SC_ERR_CONFIG, no configuration, and a detail
 *    "<file>:<line>: ..." naming a line of the input;
 *  - an accepted input holds no NUL byte and loses nothing: every
 *    "key = value" line is found under "section.key", in file order, with
 *    the line's value (blanks trimmed, one pair of quotes removed), and
 *    sc_config_str() is the last of them;
 *  - every value is a NUL-terminated string, shorter than the input, on
 *    one line;
 *  - sc_config_int()/sc_config_bool() succeed or give SC_ERR_CONFIG, and
 *    leave the default when they refuse or the key is absent;
 *  - sc_config_path() of a relative value is the file's directory + value;
 *  - the same bytes parse the same way twice.
 * Built with clang -fsanitize=fuzzer when meson has -Dfuzzing=true; the
 * corpus in tests/core/corpus-config/ is replayed by tests/lib/fuzz-replay.c
 * in every build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-replay.h"
#include "sc_config.h"
#include "sc_err.h"

#define FUZZ_ORIGIN "/fuzz/etc/smartcert.conf"
#define FUZZ_DIR "/fuzz/etc"

/* Every key the product reads (docs/configuration.md), by getter. */
static const char *const str_keys[] = {
	"deployment.name", "hsm.module", "hsm.token", "hsm.pin_source", "hsm.softhsm_conf",
	"hsm.backend", "hsm.nss_dir", "ocsp.nss_dir",
	"ca.key_type", "ca.name", "ca.default_key_type", "ca.policy_adult", "ca.policy_minor",
	"ca.ocsp_url", "ca.issuers_url", "crl.base_url", "authz.audience", "authz.issuer",
	"gateway.pin_hash", "gateway.token_label", "gateway.pin_source", "ocsp.listen",
	"ocsp.nonce", "ocsp.unknown_policy", "ocsp.path", "authz.trusted_key",
};
static const char *const int_keys[] = {
	"hsm.sessions", "store.map_size", "ca.validity_days", "ca.minor_age",
	"ca.retention_days", "crl.partitions", "crl.next_update_hours",
	"crl.delta_next_update_hours", "crl.expired_grace_days", "authz.max_skew",
	"authz.lock_threshold", "authz.lock_seconds", "gateway.key_cache",
	"ocsp.validity_seconds", "ocsp.sign_ahead_per_second", "ocsp.max_connections",
	"ocsp.idle_timeout_seconds", "ocsp.max_request_bytes",
};
static const char *const bool_keys[] = {
	"ca.suspend_holds", "gateway.debug", "ocsp.serve_crl_dir", "ocsp.cpu_steering", "hsm.fips",
};
static const char *const path_keys[] = {
	"store.path", "crl.out_dir", "authz.demo_key", "gateway.module",
};

#define NKEYS(a) (sizeof(a) / sizeof((a)[0]))

static void fail(const char *what, const char *key)
{
	fprintf(stderr, "fuzz-config: invariant broken: %s (%s)\n", what, key ? key : "-");
	abort();
}

/* A value as the caller sees it: NUL-terminated, one line, within the input. */
static void check_value(const char *v, size_t size, const char *key)
{
	size_t n = strnlen(v, size + 1);

	if (n >= size || memchr(v, '\n', n) != NULL)
		fail("value longer than the input or spanning lines", key);
}

/* Every getter on one key.  Returns SC_OK or the first refusal of a typed
 * getter the product would use on it (`typed`: 'i' int, 'b' bool, 0 none). */
static int check_key(const sc_config *cfg, const char *key, size_t size, int typed)
{
	const char *const *list;
	const char *v;
	int64_t iv;
	size_t n, i;
	char *path;
	int rc_int, rc_bool, bv, rv = SC_OK;

	v = sc_config_str(cfg, key, NULL);
	list = sc_config_list(cfg, key, &n);
	if (list == NULL || list[n] != NULL || (n == 0) != (v == NULL) ||
	    (n > 0 && list[n - 1] != v))
		fail("sc_config_list and sc_config_str disagree", key);
	for (i = 0; i < n; i++)
		check_value(list[i], size, key);

	rc_int = sc_config_int(cfg, key, -7, &iv);
	if (rc_int != SC_OK && rc_int != SC_ERR_CONFIG)
		fail("sc_config_int gave an unexpected code", key);
	if ((v == NULL || rc_int != SC_OK) && iv != -7)
		fail("sc_config_int changed the default without a number", key);
	if (v == NULL && rc_int != SC_OK)
		fail("sc_config_int refused an absent key", key);
	if (rc_int == SC_OK && v != NULL && v[0] != '\0' && v[strlen(v) - 1] >= '0' &&
	    v[strlen(v) - 1] <= '9' && iv != strtoll(v, NULL, 10))
		fail("sc_config_int misread a plain number", key);

	rc_bool = sc_config_bool(cfg, key, 2, &bv);
	if (rc_bool != SC_OK && rc_bool != SC_ERR_CONFIG)
		fail("sc_config_bool gave an unexpected code", key);
	if (v == NULL ? (rc_bool != SC_OK || bv != 2)
		      : (rc_bool == SC_OK ? (bv != 0 && bv != 1) : bv != 2))
		fail("sc_config_bool result out of range", key);

	path = sc_config_path(cfg, key, NULL);
	if ((v == NULL) != (path == NULL))
		fail("sc_config_path disagrees with sc_config_str", key);
	if (path != NULL) {
		size_t dl = strlen(FUZZ_DIR);

		if (v[0] == '/' ? strcmp(path, v) != 0
				: (strncmp(path, FUZZ_DIR, dl) != 0 || path[dl] != '/' ||
				   strcmp(path + dl + 1, v) != 0))
			fail("sc_config_path did not resolve against the file's directory", key);
	}
	free(path);

	if (typed == 'i' && rc_int != SC_OK)
		rv = rc_int;
	if (typed == 'b' && rc_bool != SC_OK)
		rv = rc_bool;
	sc_error_clear();
	return rv;
}

static int check_product_keys(const sc_config *cfg, size_t size)
{
	int rv = SC_OK, r;
	size_t i;

	for (i = 0; i < NKEYS(str_keys); i++)
		check_key(cfg, str_keys[i], size, 0);
	for (i = 0; i < NKEYS(path_keys); i++)
		check_key(cfg, path_keys[i], size, 0);
	for (i = 0; i < NKEYS(int_keys); i++)
		if ((r = check_key(cfg, int_keys[i], size, 'i')) != SC_OK && rv == SC_OK)
			rv = r;
	for (i = 0; i < NKEYS(bool_keys); i++)
		if ((r = check_key(cfg, bool_keys[i], size, 'b')) != SC_OK && rv == SC_OK)
			rv = r;
	return rv;
}

/* [*a, *b) without blanks at either end (and a CR before the newline). */
static void span_trim(const char *d, size_t *a, size_t *b)
{
	while (*a < *b && (d[*a] == ' ' || d[*a] == '\t'))
		(*a)++;
	while (*b > *a && (d[*b - 1] == ' ' || d[*b - 1] == '\t' || d[*b - 1] == '\r'))
		(*b)--;
}

/* An accepted input, line by line, against what the getters return: the
 * k-th "key = value" line of a name is the k-th value of its list. */
static void check_nothing_lost(const sc_config *cfg, const char *d, size_t size)
{
	size_t at = 0, sec_a = 0, sec_b = 0, lineno = 0, nseen = 0, i;
	char **seen = calloc(size / 2 + 1, sizeof(*seen));   /* names of earlier lines */

	if (seen == NULL)
		abort();
	while (at < size) {
		const char *nl = memchr(d + at, '\n', size - at);
		size_t a = at, b = nl != NULL ? (size_t)(nl - d) : size, eq, ka, kb, va, vb, n, k;
		const char *const *list;
		char *name;

		at = nl != NULL ? b + 1 : size;
		lineno++;
		span_trim(d, &a, &b);
		if (lineno == 1 && b - a >= 3 && memcmp(d + a, "\xef\xbb\xbf", 3) == 0) {
			a += 3;
			span_trim(d, &a, &b);
		}
		if (a == b || d[a] == '#' || d[a] == ';')
			continue;
		if (d[a] == '[') {
			sec_a = a + 1;
			sec_b = (size_t)((const char *)memchr(d + a, ']', b - a) - d);
			span_trim(d, &sec_a, &sec_b);
			continue;
		}
		eq = (size_t)((const char *)memchr(d + a, '=', b - a) - d);
		ka = a;
		kb = eq;
		va = eq + 1;
		vb = b;
		span_trim(d, &ka, &kb);
		span_trim(d, &va, &vb);
		if (vb > va && d[va] == '"') {
			va++;
			vb--;
		}
		n = sec_b - sec_a + kb - ka + 2;
		name = malloc(n);
		if (name == NULL)
			abort();
		snprintf(name, n, "%.*s.%.*s", (int)(sec_b - sec_a), d + sec_a, (int)(kb - ka),
			 d + ka);
		for (i = 0, k = 0; i < nseen; i++)
			k += strcmp(name, seen[i]) == 0;
		list = sc_config_list(cfg, name, &n);
		if (k >= n || strlen(list[k]) != vb - va || memcmp(list[k], d + va, vb - va) != 0)
			fail("a key = value line is missing or altered", name);
		check_key(cfg, name, size, 0);
		seen[nseen++] = name;
	}
	for (i = 0; i < nseen; i++)
		free(seen[i]);
	free(seen);
}

/* A refusal names a line of the input: "<file>:<line>: ...". */
static void check_refusal(int rc, const sc_config *cfg, const uint8_t *data, size_t size)
{
	const char *detail = sc_error_detail(), *p;
	size_t lines = 1, i;
	unsigned long line;
	char *end;

	if (cfg != NULL || (rc != SC_ERR_CONFIG && rc != SC_ERR_NOMEM))
		fail("a refusal left a configuration or gave an unexpected code", NULL);
	if (rc != SC_ERR_CONFIG)
		return;
	for (i = 0; i < size; i++)
		lines += data[i] == '\n';
	if (strncmp(detail, FUZZ_ORIGIN ":", strlen(FUZZ_ORIGIN ":")) != 0)
		fail("a refusal does not name the file", detail);
	p = detail + strlen(FUZZ_ORIGIN ":");
	line = strtoul(p, &end, 10);
	if (end == p || *end != ':' || line < 1 || line > lines)
		fail("a refusal does not name a line of the input", detail);
}

int sc_fuzz_result(const uint8_t *data, size_t size)
{
	sc_config *cfg = NULL;
	int rc;

	rc = sc_config_parse(FUZZ_ORIGIN, data, size, &cfg);
	if (rc == SC_OK)
		rc = check_product_keys(cfg, size);
	sc_config_free(cfg);
	sc_error_clear();
	return rc;
}

/* A configuration is plain text: a changed copy may well stay valid. */
const int sc_fuzz_mutants_refused = 0;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sc_config *cfg = NULL, *again = NULL;
	int rc, rc2;
	size_t i;

	rc = sc_config_parse(FUZZ_ORIGIN, data, size, &cfg);
	if (rc != SC_OK) {
		check_refusal(rc, cfg, data, size);
	} else {
		if (memchr(data, '\0', size) != NULL)
			fail("an input with a NUL byte was accepted", NULL);
		if (strcmp(sc_config_file(cfg), FUZZ_ORIGIN) != 0 ||
		    strcmp(sc_config_dir(cfg), FUZZ_DIR) != 0)
			fail("file or directory name altered", sc_config_file(cfg));
		check_product_keys(cfg, size);
		check_nothing_lost(cfg, (const char *)data, size);
	}
	rc2 = sc_config_parse(FUZZ_ORIGIN, data, size, &again);
	if (rc2 != rc)
		fail("the same bytes parsed differently", NULL);
	for (i = 0; rc == SC_OK && i < NKEYS(str_keys); i++) {
		const char *a = sc_config_str(cfg, str_keys[i], ""), *b = sc_config_str(again, str_keys[i], "");

		if (strcmp(a, b) != 0)
			fail("the same bytes gave different values", str_keys[i]);
	}
	sc_config_free(again);
	sc_config_free(cfg);
	sc_error_clear();
	return 0;
}
