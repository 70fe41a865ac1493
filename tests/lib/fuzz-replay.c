/*
 * Replays a fuzz target's corpus as an ordinary test, then a bounded, seeded
 * set of mutations of each corpus file.  Linked with one target, which
 * provides the hooks of fuzz-replay.h.
 *
 * File names say what each corpus input must give (sc_fuzz_result()):
 *   expect-<errname>--<description>   e.g. expect-ok--p256.der,
 *                                     expect-config--nul-byte.conf
 * Any other name is only replayed (it must not crash or break an invariant
 * of the target).  When the target sets sc_fuzz_mutants_refused, every
 * mutation of an expect-ok input must be refused.  SC_FUZZ_SEED fixes the
 * mutation seed (printed, so a failure can be replayed).
 *
 *   REPLAY CORPUS_DIR...   every file of each directory, sorted
 *   REPLAY FILE...         just those inputs (and their mutations)
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz-replay.h"
#include "sc_err.h"
#include "sc_util.h"

#define MUTATIONS 300

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: reproducible from the printed seed */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static int expected_code(const char *name, int *code, int *has)
{
	const char *end;
	size_t n;
	int c;

	*has = 0;
	if (strncmp(name, "expect-", 7) != 0)
		return 0;
	end = strstr(name + 7, "--");
	if (end == NULL)
		return -1;
	n = (size_t)(end - (name + 7));
	for (c = SC_OK; c >= SC_ERR_INTERNAL; c--) {
		const char *en = c == SC_OK ? "ok" : sc_errname(c);

		if (strlen(en) == n && strncmp(en, name + 7, n) == 0) {
			*code = c;
			*has = 1;
			return 0;
		}
	}
	return -1;
}

static int replay(const char *dir, const char *name)
{
	char path[4096];
	unsigned char *data = NULL, *m = NULL;
	size_t len = 0, mlen, k;
	int want = 0, has = 0, rc, failures = 0, i;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (sc_file_read(path, 1 << 20, &data, &len) != SC_OK) {
		fprintf(stderr, "cannot read %s\n", path);
		return 1;
	}
	if (expected_code(name, &want, &has) != 0) {
		fprintf(stderr, "%s: unknown expectation in the name\n", name);
		failures++;
	}
	LLVMFuzzerTestOneInput(data, len);
	if (has) {
		rc = sc_fuzz_result(data, len);
		if (rc != want) {
			fprintf(stderr, "FAIL %s: got %s (%s)\n", name, rc == SC_OK ? "ok" : sc_errname(rc),
				sc_error_detail());
			failures++;
		} else {
			printf("ok - %s\n", name);
		}
	}
	m = malloc(len + 8);
	if (m == NULL) {
		free(data);
		return failures + 1;
	}
	for (i = 0; i < MUTATIONS; i++) {
		uint64_t r = rng();
		int changed;

		memcpy(m, data, len);
		mlen = len;
		switch (r % 4) {
		case 0:    /* flip 1..4 random bits */
			for (k = 0; k < 1 + (r >> 8) % 4 && len > 0; k++) {
				size_t at = (size_t)(rng() % len);

				m[at] ^= (unsigned char)(1u << (rng() % 8));
			}
			break;
		case 1:    /* truncate */
			mlen = len > 0 ? (size_t)(rng() % len) : 0;
			break;
		case 2:    /* append bytes */
			for (k = 0; k < 1 + (r >> 8) % 8; k++)
				m[mlen++] = (unsigned char)rng();
			break;
		default:   /* overwrite one byte */
			if (len > 0)
				m[rng() % len] = (unsigned char)rng();
			break;
		}
		changed = mlen != len || memcmp(m, data, len) != 0;
		LLVMFuzzerTestOneInput(m, mlen);
		if (sc_fuzz_mutants_refused && has && want == SC_OK && changed &&
		    sc_fuzz_result(m, mlen) == SC_OK) {
			fprintf(stderr, "FAIL %s: mutation %d (kind %d) accepted\n", name, i, (int)(r % 4));
			failures++;
		}
	}
	free(m);
	free(data);
	return failures;
}

int main(int argc, char **argv)
{
	const char *seed_env = getenv("SC_FUZZ_SEED");
	uint64_t seed = UINT64_C(0x5eed5eed2026);
	int failures = 0, files = 0, a;

	if (seed_env != NULL && *seed_env != '\0')
		seed = strtoull(seed_env, NULL, 0);
	if (seed == 0)
		seed = 1;
	rng_state = seed;
	printf("# mutation seed SC_FUZZ_SEED=0x%llx\n", (unsigned long long)seed);
	for (a = 1; a < argc; a++) {
		struct dirent **names = NULL;
		struct stat st;
		int n, i;

		if (stat(argv[a], &st) == 0 && S_ISREG(st.st_mode)) {
			const char *slash = strrchr(argv[a], '/');
			char dir[4096];

			snprintf(dir, sizeof(dir), "%.*s", slash != NULL ? (int)(slash - argv[a]) : 1,
				 slash != NULL ? argv[a] : ".");
			failures += replay(dir, slash != NULL ? slash + 1 : argv[a]);
			files++;
			continue;
		}
		/* Sorted, so a seed replays the same mutations. */
		n = scandir(argv[a], &names, NULL, alphasort);
		if (n < 0) {
			fprintf(stderr, "cannot open corpus %s\n", argv[a]);
			return 1;
		}
		for (i = 0; i < n; i++) {
			if (names[i]->d_name[0] != '.') {
				failures += replay(argv[a], names[i]->d_name);
				files++;
			}
			free(names[i]);
		}
		free(names);
	}
	printf("%d corpus files, %d failures\n", files, failures);
	if (files == 0) {
		fprintf(stderr, "empty corpus\n");
		return 1;
	}
	return failures == 0 ? 0 : 1;
}
