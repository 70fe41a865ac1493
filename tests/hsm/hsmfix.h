/*
 * Test fixture for the HSM layer: a fresh token in a temporary directory
 * under the build directory: SoftHSMv2 with its own softhsm2.conf, or, when
 * SC_TEST_BACKEND=nss, an NSS softoken database in FIPS mode.
 */
#ifndef SC_TEST_HSMFIX_H
#define SC_TEST_HSMFIX_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "sc_hsm.h"
#include "tcheck.h"

#define HSMFIX_LABEL    "sc-hsm-test"
#define HSMFIX_SO_PIN   "so-pin-8642"
#define HSMFIX_USER_PIN "user-pin-1357"

typedef struct hsmfix {
	char dir[PATH_MAX - 64];   /* the temporary directory */
	char conf[PATH_MAX];       /* its softhsm2.conf */
	char pin_file[PATH_MAX];   /* the user PIN, mode 0600 */
	char pin_source[PATH_MAX + 8];
	const char *module;        /* the backend's module path */
	const char *backend;       /* "softhsm2" or "nss" */
	char nss_dir[PATH_MAX];    /* nss: the database directory */
} hsmfix;

/* Whether the fixture runs on NSS (SC_TEST_BACKEND=nss). */
int hsmfix_is_nss(void);

/* Create the directory and the token (exits 77 if the backend is absent). */
void hsmfix_setup(hsmfix *fx, const char *name);
/* Parameters for sc_hsm_open on the fixture's token. */
void hsmfix_params(const hsmfix *fx, sc_hsm_params *p, unsigned sessions);
sc_hsm *hsmfix_open(const hsmfix *fx, unsigned sessions);
/* A per-user key wrapped under the master keys, as the store keeps it. */
typedef struct hsmfix_key {
	int alg;
	unsigned char *blob, *spki;
	size_t blob_len, spki_len;
} hsmfix_key;

/* Generate one on hsm (whose master keys exist); exits on failure. */
void hsmfix_key_new(sc_hsm *hsm, int alg, hsmfix_key *k);
/* Unwrap it for one use (sc_hsm_unwrap's result). */
int hsmfix_key_unwrap(sc_hsm *hsm, const hsmfix_key *k, sc_hsm_key **out);
void hsmfix_key_free(hsmfix_key *k);
/* Remove the directory (kept when SC_TEST_KEEP is set or a check failed). */
void hsmfix_teardown(hsmfix *fx);
/* Write a file with mode 0600. */
void hsmfix_write(const char *path, const char *text);

#endif
