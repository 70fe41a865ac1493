/*
 * Tiny assertion and temp-directory helpers for the core unit tests.
 */
#ifndef TCORE_H
#define TCORE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sc_err.h"

static int tc_failures;

#define CHECK(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: CHECK failed: %s (detail: %s)\n", __FILE__, __LINE__, \
			#cond, sc_error_detail()); \
		tc_failures++; \
	} \
} while (0)

#define CHECK_RC(expr, want) do { \
	int tc_rc_ = (expr); \
	if (tc_rc_ != (want)) { \
		fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (%s); detail: %s\n", \
			__FILE__, __LINE__, #expr, tc_rc_, sc_errname(tc_rc_), (want), \
			sc_errname(want), sc_error_detail()); \
		tc_failures++; \
	} \
} while (0)

#define REQUIRE(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: REQUIRE failed: %s (detail: %s)\n", __FILE__, __LINE__, \
			#cond, sc_error_detail()); \
		exit(1); \
	} \
} while (0)

static inline int tc_rm_fn(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(path);
}

static inline void tc_rmtree(const char *path)
{
	nftw(path, tc_rm_fn, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory under the build tree (or /tmp). */
static inline char *tc_tmpdir(const char *name)
{
	const char *base = getenv("SMARTCERT_BUILDDIR");
	char *p;
	size_t n;

	if (base == NULL || *base == '\0')
		base = "/tmp";
	n = strlen(base) + strlen(name) + 32;
	p = malloc(n);
	REQUIRE(p != NULL);
	snprintf(p, n, "%s/tmp-%s-XXXXXX", base, name);
	REQUIRE(mkdtemp(p) != NULL);
	return p;
}

static inline int tc_finish(const char *name)
{
	if (tc_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, tc_failures);
		return 1;
	}
	printf("%s: all checks passed\n", name);
	return 0;
}

#endif
