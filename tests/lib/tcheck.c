/*
 * The C tests' assertions and case runner (tcheck.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tcheck.h"

int tcheck_checks;
int tcheck_failures;
static const char *skipped;

static void vreport(const char *file, int line, const char *expr, const char *fmt, va_list ap)
{
	const char *detail = sc_error_detail();

	fprintf(stderr, "FAIL %s:%d: %s", file, line, expr);
	if (fmt != NULL && fmt[0] == ' ')
		fmt++;
	if (fmt != NULL && *fmt != '\0') {
		fputs(": ", stderr);
		vfprintf(stderr, fmt, ap);
	}
	if (detail != NULL && *detail != '\0')
		fprintf(stderr, " [detail: %s]", detail);
	fputc('\n', stderr);
}

void tcheck_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
	va_list ap;

	tcheck_failures++;
	va_start(ap, fmt);
	vreport(file, line, expr, fmt, ap);
	va_end(ap);
}

void tcheck_fail_rc(const char *file, int line, const char *expr, int got, int want,
		    const char *fmt, ...)
{
	char what[512];
	va_list ap;

	snprintf(what, sizeof(what), "%s returned %d (%s), want %d (%s)", expr, got,
		 sc_errname(got), want, sc_errname(want));
	tcheck_failures++;
	va_start(ap, fmt);
	vreport(file, line, what, fmt, ap);
	va_end(ap);
}

void tcheck_stop(void)
{
	fprintf(stderr, "stopped: a REQUIRE failed (%d of %d checks failed)\n", tcheck_failures,
		tcheck_checks);
	exit(1);
}

void tcheck_skip(const char *why)
{
	skipped = why;
}

static int rm_fn(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void tcheck_rmtree(const char *path)
{
	nftw(path, rm_fn, 16, FTW_DEPTH | FTW_PHYS);
}

char *tcheck_tmpdir(const char *name)
{
	const char *base = getenv("SMARTCERT_BUILDDIR");
	char *p;

	if (base == NULL || *base == '\0')
		base = "/tmp";
	if (asprintf(&p, "%s/tmp-%s-XXXXXX", base, name) < 0 || mkdtemp(p) == NULL) {
		fprintf(stderr, "cannot make a directory %s-... under %s\n", name, base);
		exit(1);
	}
	return p;
}

static char *case_dir(const char *prog, const char *name)
{
	char both[256];

	snprintf(both, sizeof(both), "%s-%s", prog, name);
	return tcheck_tmpdir(both);
}

static int run_case(const char *prog, const struct tcheck_case *c,
		    const struct tcheck_hooks *hooks)
{
	int failed_before = tcheck_failures, checks_before = tcheck_checks, failed;
	char *dir = case_dir(prog, c->name);

	skipped = NULL;
	printf("# %s %s\n", prog, c->name);
	fflush(stdout);
	sc_error_clear();
	if (hooks != NULL && hooks->setup != NULL)
		hooks->setup(c->name, dir);
	c->fn(dir);
	if (hooks != NULL && hooks->teardown != NULL)
		hooks->teardown(c->name, dir);
	failed = tcheck_failures - failed_before;
	if (failed == 0 && getenv("SC_TEST_KEEP") == NULL)
		tcheck_rmtree(dir);
	else
		fprintf(stderr, "kept %s\n", dir);
	free(dir);
	if (failed)
		printf("FAIL %s: %d of %d checks failed\n", c->name, failed,
		       tcheck_checks - checks_before);
	else if (skipped != NULL)
		printf("SKIP %s: %s\n", c->name, skipped);
	else
		printf("ok   %s (%d checks)\n", c->name, tcheck_checks - checks_before);
	fflush(stdout);
	return failed ? 1 : skipped != NULL ? 77 : 0;
}

int tcheck_main(int argc, char **argv, const char *prog, const struct tcheck_case *cases,
		size_t n, const struct tcheck_hooks *hooks)
{
	int i, rc, any_skip = 0, any_fail = 0;
	size_t j;

	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		for (j = 0; j < n; j++)
			printf("%s\n", cases[j].name);
		return 0;
	}
	for (i = 1; i < argc; i++) {
		for (j = 0; j < n && strcmp(argv[i], cases[j].name) != 0; j++)
			;
		if (j == n) {
			fprintf(stderr, "%s: no case named '%s' (%s --list names them)\n", prog,
				argv[i], argv[0]);
			return 2;
		}
	}
	for (j = 0; j < n; j++) {
		if (argc > 1) {
			for (i = 1; i < argc && strcmp(argv[i], cases[j].name) != 0; i++)
				;
			if (i == argc)
				continue;
		}
		rc = run_case(prog, &cases[j], hooks);
		any_fail |= rc == 1;
		any_skip |= rc == 77;
	}
	printf("%s: %d checks, %d failed\n", prog, tcheck_checks, tcheck_failures);
	return any_fail ? 1 : any_skip ? 77 : 0;
}
