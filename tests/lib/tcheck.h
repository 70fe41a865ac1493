/*
 * The one assertion vocabulary and case runner of the C tests.
 *
 *   CHECK(cond)                     count a check; on failure print where,
 *   CHECK(cond, "fmt", ...)         the expression, the message if any and
 *                                   the last sc_error_detail(), and go on
 *   CHECK_RC(expr, want)            expr must return the sc_err `want`;
 *   CHECK_RC(expr, want, "fmt", ...)  a failure names both codes
 *   REQUIRE(cond [, "fmt", ...])    as CHECK, but a failure stops the test
 *                                   binary (exit 1): for what later checks
 *                                   cannot do without
 *
 * A test binary is a table of named cases:
 *
 *   static const struct tcheck_case cases[] = {
 *           TCASE(roundtrip),            (runs test_roundtrip)
 *           TCASE_NAMED("bit-flips", test_bit_flips),
 *   };
 *   int main(int argc, char **argv)
 *   {
 *           return tcheck_main(argc, argv, "store", cases, TCHECK_N(cases), NULL);
 *   }
 *
 * Every case gets a fresh directory (under $SMARTCERT_BUILDDIR, else /tmp),
 * removed when the case passed and SC_TEST_KEEP is not set.
 *   BINARY            runs every case, in table order
 *   BINARY NAME...    runs the named cases only
 *   BINARY --list     prints the case names, one a line
 * Each tests folder's meson.build registers one test a case, from the same
 * table (tests/lib/tcases.py reads the TCASE lines), named PREFIX-NAME: run
 * one with 'meson test -C build store-roundtrip'.
 * Exit: 0 every check passed, 1 a check failed, 2 usage or unknown case,
 * 77 a case skipped (tcheck_skip).
 */
#ifndef TCHECK_H
#define TCHECK_H

#include <stddef.h>

#include "sc_err.h"

extern int tcheck_checks;
extern int tcheck_failures;

/* The macros' back ends.  fmt is " " followed by the caller's format, so
 * that a check without a message still passes a (one-space) format. */
void tcheck_fail(const char *file, int line, const char *expr, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void tcheck_fail_rc(const char *file, int line, const char *expr, int got, int want,
		    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Stop the binary here: the REQUIRE that failed has been reported. */
void tcheck_stop(void) __attribute__((noreturn));
/* Skip the running case (a tool it needs is absent): the binary exits 77
 * once the case ends if nothing failed. */
void tcheck_skip(const char *why);

#define CHECK(cond, ...)                                                               \
	do {                                                                           \
		tcheck_checks++;                                                       \
		if (!(cond))                                                           \
			tcheck_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);        \
	} while (0)

#define CHECK_RC(expr, want, ...)                                                      \
	do {                                                                           \
		int tcheck_rc_ = (expr), tcheck_want_ = (want);                        \
		tcheck_checks++;                                                       \
		if (tcheck_rc_ != tcheck_want_)                                        \
			tcheck_fail_rc(__FILE__, __LINE__, #expr, tcheck_rc_, tcheck_want_, \
				       " " __VA_ARGS__);                                \
	} while (0)

#define REQUIRE(cond, ...)                                                             \
	do {                                                                           \
		tcheck_checks++;                                                       \
		if (!(cond)) {                                                         \
			tcheck_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);        \
			tcheck_stop();                                                 \
		}                                                                      \
	} while (0)

struct tcheck_case {
	const char *name;
	void (*fn)(const char *dir);
};

#define TCASE(name) { #name, test_##name }
#define TCASE_NAMED(name, fn) { name, fn }
#define TCHECK_N(a) (sizeof(a) / sizeof((a)[0]))

/* Around every case (either may be NULL): after the case's directory is made,
 * before it is removed. */
struct tcheck_hooks {
	void (*setup)(const char *case_name, const char *dir);
	void (*teardown)(const char *case_name, const char *dir);
};

int tcheck_main(int argc, char **argv, const char *prog, const struct tcheck_case *cases,
		size_t n, const struct tcheck_hooks *hooks);

/* A fresh directory tmp-NAME-XXXXXX under $SMARTCERT_BUILDDIR (else /tmp),
 * malloc'd; exits the binary if it cannot be made. */
char *tcheck_tmpdir(const char *name);
/* Remove a directory tree (best effort). */
void tcheck_rmtree(const char *path);

#endif
