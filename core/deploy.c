/*
 * Opening a deployment (sc_deploy.h): config, store, backend HSM and CA
 * certificates, in that order, each failure telling the user what to fix.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/x509.h>

#include "sc_audit.h"
#include "sc_checkpoint.h"
#include "sc_deploy.h"
#include "sc_err.h"
#include "sc_util.h"

#define SC_DEFAULT_MAP_SIZE (64LL << 30)

static int load_cert(sc_txn *txn, const char *name, X509 **out)
{
	int rc;
	const void *data = NULL;
	size_t len = 0;
	const unsigned char *p;
	X509 *x;

	*out = NULL;
	rc = sc_store_meta_get(txn, name, &data, &len);
	if (rc == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_NOT_FOUND, "the store holds no CA certificate "
				    "'%s': run smartcert init", name);
	if (rc < 0)
		return rc;
	p = data;
	x = d2i_X509(NULL, &p, (long)len);
	if (!x || p != (const unsigned char *)data + len) {
		X509_free(x);
		return sc_error_set(SC_ERR_STORE, "the CA certificate '%s' in the store is "
				    "not valid DER: the store is damaged", name);
	}
	*out = x;
	return 0;
}

int sc_deploy_load_ca(sc_deploy *d)
{
	int rc;
	sc_txn *txn = NULL;
	X509 *root = NULL, *issuing = NULL, *ocsp = NULL;

	if (!d || !d->store)
		return sc_error_set(SC_ERR_INVALID, "sc_deploy_load_ca: no store");
	rc = sc_txn_begin(d->store, SC_TXN_READ, &txn);
	if (rc < 0)
		return rc;
	rc = load_cert(txn, SC_META_ROOT_CERT, &root);
	if (rc < 0)
		goto out;
	rc = load_cert(txn, SC_META_ISSUING_CERT, &issuing);
	if (rc < 0)
		goto out;
	rc = load_cert(txn, SC_META_OCSP_CERT, &ocsp);
	if (rc < 0)
		goto out;
	/* All or nothing: a reload that fails keeps the certificates in use. */
	X509_free(d->root_cert);
	X509_free(d->issuing_cert);
	X509_free(d->ocsp_cert);
	d->root_cert = root;
	d->issuing_cert = issuing;
	d->ocsp_cert = ocsp;
	root = issuing = ocsp = NULL;
	rc = 0;
out:
	sc_txn_abort(txn);
	X509_free(root);
	X509_free(issuing);
	X509_free(ocsp);
	return rc;
}

/* The store the configuration names: an LMDB directory (store.path), or a
 * schema of a PostgreSQL database whose connection string comes from a
 * secret source (store.pg_conninfo: file: or env:, never the config in
 * clear, for it may hold a password) or from libpq's own environment. */
int sc_deploy_open_store(const sc_config *cfg, unsigned sflags, sc_store **out)
{
	const char *backend = sc_config_str(cfg, "store.backend", "lmdb");
	const char *source = sc_config_str(cfg, "store.pg_conninfo", NULL);
	char *store_path = NULL, *conninfo = NULL;
	int64_t map_size;
	int rc;

	if (strcmp(backend, "postgresql") == 0) {
		if (source != NULL &&
		    (rc = sc_secret_source_read(source, sc_config_dir(cfg), 0, 0, &conninfo)) < 0)
			return sc_error_set(rc, "store.pg_conninfo: %s", sc_error_detail());
		rc = sc_store_open_pg(conninfo != NULL ? conninfo : "",
				      sc_config_str(cfg, "store.pg_schema", "smartcert"), sflags, out);
		sc_secret_free(conninfo);
		return rc;
	}
	if (strcmp(backend, "lmdb") != 0)
		return sc_error_set(SC_ERR_CONFIG, "store.backend '%s' is unknown: give lmdb or "
				    "postgresql", backend);
	rc = sc_config_int(cfg, "store.map_size", SC_DEFAULT_MAP_SIZE, &map_size);
	if (rc < 0)
		return rc;
	if (map_size < (1LL << 20))
		return sc_error_set(SC_ERR_CONFIG, "store.map_size must be at least 1M");
	store_path = sc_config_path(cfg, "store.path", "store");
	if (!store_path)
		return SC_ERR_NOMEM;
	rc = sc_store_open(store_path, (uint64_t)map_size, sflags, out);
	if (rc == SC_ERR_NOT_FOUND)
		rc = sc_error_set(SC_ERR_NOT_FOUND, "no store at '%s': run smartcert init "
				  "(or fix store.path)", store_path);
	free(store_path);
	return rc;
}

int sc_deploy_open(const char *config_path, unsigned flags, sc_deploy **out)
{
	int rc;
	const char *path;
	sc_deploy *d = NULL;
	sc_hsm_params *hp = NULL;
	int64_t parts;
	unsigned sflags = 0;

	*out = NULL;
	path = sc_config_locate(config_path);
	if (!path)
		return sc_error_set(SC_ERR_CONFIG, "no configuration: pass --config FILE or "
				    "set SMARTCERT_CONF (smartcert init --dir DIR writes one)");
	d = calloc(1, sizeof(*d));
	if (!d)
		return SC_ERR_NOMEM;
	d->audit_mark = sc_audit_appended();
	rc = sc_config_load(path, &d->cfg);
	if (rc < 0)
		goto out;

	rc = sc_config_int(d->cfg, "crl.partitions", 16, &parts);
	if (rc < 0)
		goto out;
	if (parts < 1 || parts > 65536) {
		rc = sc_error_set(SC_ERR_CONFIG, "crl.partitions must be 1..65536 (it is "
				  "fixed for the CA's life)");
		goto out;
	}
	d->crl_partitions = (uint32_t)parts;

	if (flags & SC_DEPLOY_STORE_RDONLY)
		sflags |= SC_STORE_RDONLY;
	else if (flags & SC_DEPLOY_CREATE_STORE)
		sflags |= SC_STORE_CREATE;
	if ((rc = sc_deploy_open_store(d->cfg, sflags, &d->store)) < 0)
		goto out;

	if (!(flags & SC_DEPLOY_NO_HSM)) {
		/* ~12 KiB of path buffers: not for the stack of a daemon thread. */
		hp = calloc(1, sizeof(*hp));
		if (!hp) {
			rc = SC_ERR_NOMEM;
			goto out;
		}
		rc = sc_hsm_params_from_config(d->cfg, hp);
		if (rc < 0)
			goto out;
		rc = sc_hsm_open(hp, &d->hsm);
		if (rc < 0)
			goto out;
		sc_deploy_use_hsm_for_audit(d->hsm);
	}

	/* A store behind the newest checkpoint was rolled back: refused by
	 * every process, before anything is served from it. */
	if (!(flags & SC_DEPLOY_NO_CHECKPOINT)) {
		rc = sc_checkpoint_check(d->cfg, d->store, d->hsm);
		if (rc < 0)
			goto out;
	}

	if (!(flags & SC_DEPLOY_NO_CA)) {
		rc = sc_deploy_load_ca(d);
		if (rc < 0)
			goto out;
	}

	*out = d;
	d = NULL;
	rc = 0;
out:
	free(hp);
	sc_deploy_close(d);
	return rc;
}

static int deploy_audit_mac(void *ctx, const void *const *parts, const size_t *lens,
			    size_t nparts, unsigned char mac[32])
{
	return sc_hsm_audit_mac(ctx, parts, lens, nparts, mac);
}

void sc_deploy_use_hsm_for_audit(sc_hsm *hsm)
{
	sc_audit_set_mac(hsm != NULL ? deploy_audit_mac : NULL, hsm);
}

void sc_deploy_close(sc_deploy *d)
{
	if (!d)
		return;
	/* An officer command that changed the store leaves a checkpoint.  A
	 * failure is a warning (the next one covers this change too), and
	 * leaves the command's own error message in place. */
	if (d->hsm != NULL && d->store != NULL && sc_audit_appended() != d->audit_mark) {
		char saved[1024];

		snprintf(saved, sizeof(saved), "%s", sc_error_detail());
		if (sc_checkpoint_write(d->cfg, d->store, d->hsm, "officer") != SC_OK)
			fprintf(stderr, "smartcert: warning: no checkpoint written: %s\n",
				sc_error_detail());
		if (saved[0] != '\0')
			(void)sc_error_set(SC_ERR_INTERNAL, "%s", saved);
		else
			sc_error_clear();
	}
	if (d->hsm != NULL)
		sc_deploy_use_hsm_for_audit(NULL);
	X509_free(d->root_cert);
	X509_free(d->issuing_cert);
	X509_free(d->ocsp_cert);
	sc_hsm_close(d->hsm);
	if (d->store)
		sc_store_close(d->store);
	if (d->cfg)
		sc_config_free(d->cfg);
	free(d);
}

uint32_t sc_crl_partition_of(const sc_serial *serial, uint32_t partitions)
{
	uint32_t v = 0;
	size_t i, n;

	if (!serial || partitions <= 1)
		return 0;
	n = serial->len < 4 ? serial->len : 4;
	for (i = 0; i < n; i++)
		v = (v << 8) | serial->b[i];
	return v % partitions;
}

void sc_crl_part_name(uint32_t partition, int delta, char *buf, size_t len)
{
	if (!buf || len == 0)
		return;
	snprintf(buf, len, delta ? "part-%u-delta.crl" : "part-%u.crl", (unsigned)partition);
}

/* One private path: 1 when it is open to the group or others. */
static int private_part_open(const char *path, char *fix, size_t fixlen)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return 0;
	if ((st.st_mode & 077) == 0)
		return 0;
	snprintf(fix, fixlen, "chmod %s '%s'", S_ISDIR(st.st_mode) ? "0700" : "0600", path);
	return 1;
}

int sc_deploy_check_private(const sc_deploy *d, int strict)
{
	static const char *const parts[] = { "secrets", "hsm", "hsm/tokens" };
	char path[4096], fix[4200];
	char *store = NULL;
	size_t i;
	int rc = SC_OK;

	if (d == NULL || d->cfg == NULL)
		return SC_OK;
	store = sc_config_path(d->cfg, "store.path", "store");
	for (i = 0; i < sizeof(parts) / sizeof(parts[0]) + 2 && rc == SC_OK; i++) {
		if (i < sizeof(parts) / sizeof(parts[0]))
			snprintf(path, sizeof(path), "%s/%s", sc_config_dir(d->cfg), parts[i]);
		else if (store == NULL)
			continue;
		else if (i == sizeof(parts) / sizeof(parts[0]))
			snprintf(path, sizeof(path), "%s", store);
		else
			snprintf(path, sizeof(path), "%s/data.mdb", store);
		if (!private_part_open(path, fix, sizeof(fix)))
			continue;
		if (strict)
			rc = sc_error_set(SC_ERR_PERMISSION, "%s is readable by other accounts: "
					  "run `%s` (see README, \"Accounts and files\")", path, fix);
		else
			fprintf(stderr, "smartcert: warning: %s is readable by other accounts; "
				"run `%s`\n", path, fix);
	}
	free(store);
	return rc;
}
