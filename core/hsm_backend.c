/*
 * The backends the HSM layer knows, and loading their modules.
 *
 * PKCS#11 leaves some things open that decide whether smartcert works on a
 * module at all: how the module is entered and initialised, which mechanism
 * number means RFC 5649 key wrap, and what an EC unwrap template must hold.
 * Every such difference lives in hsm_backends[] below, and nowhere else;
 * docs/backends.md has the same table with the evidence for each entry
 * (scripts/qualify-backend.sh finds these answers for an unknown module).
 *
 * SoftHSMv2 is loaded through p11-kit in managed mode (p11_kit_module_load
 * with flags 0): p11-kit gives this layer its own virtual instance, so a
 * process that also loads the same module elsewhere (a gateway that loads
 * both SoftHSMv2 and our PKCS#11 module) does not see its C_Initialize /
 * C_Finalize fight ours.  NSS's softoken cannot be loaded that way: it
 * needs CK_C_INITIALIZE_ARGS.pReserved (its database) and, in FIPS mode,
 * the entry FC_GetFunctionList; p11-kit passes neither.  It is dlopen()ed
 * and initialised once per process, shared by every sc_hsm of the process
 * (NSS's softoken is one instance per process whatever we do).
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>
#include <p11-kit/pkcs11.h>

#include "sc_ckr.h"
#include "sc_err.h"
#include "sc_hsm.h"
#include "sc_util.h"
#include "hsm_internal.h"

/* RFC 5649 under the number PKCS#11 3.0 gives it; SoftHSMv2 2.6 predates
 * it and answers 0x210A (CKM_AES_KEY_WRAP_PAD, which NSS uses for RFC 3394
 * with PKCS#7 padding, another format). */
#define HSM_CKM_AES_KEY_WRAP_KWP 0x0000210BUL
/* NSS's vendor attribute: an EC private key object keeps its public point
 * in it (raw 04||X||Y); C_UnwrapKey of an EC key wants it in the template. */
#define HSM_CKA_NSS_DB 0xD5A0DB00UL

/* clang-format off */
const struct hsm_backend hsm_backends[] = {
	{ .name = "softhsm2", .entry = "C_GetFunctionList", .entry_fips = NULL,
	  .direct = 0, .wrap_mech = CKM_AES_KEY_WRAP_PAD, .ec_unwrap_point = 0,
	  .copy_token_keys = 0, .fixed_token = 0 },
	{ .name = "nss", .entry = "C_GetFunctionList", .entry_fips = "FC_GetFunctionList",
	  .direct = 1, .wrap_mech = HSM_CKM_AES_KEY_WRAP_KWP, .ec_unwrap_point = HSM_CKA_NSS_DB,
	  .copy_token_keys = 1, .fixed_token = 1 },
};
/* clang-format on */

const struct hsm_backend *hsm_backend_named(const char *name)
{
	size_t i;

	if (name == NULL || *name == '\0')
		return &hsm_backends[0];
	for (i = 0; i < sizeof(hsm_backends) / sizeof(hsm_backends[0]); i++)
		if (strcmp(hsm_backends[i].name, name) == 0)
			return &hsm_backends[i];
	return NULL;
}

int sc_hsm_backend_known(const char *name)
{
	return hsm_backend_named(name) != NULL;
}

size_t hsm_blob_point_len(const struct hsm_backend *be, int alg)
{
	if (be->ec_unwrap_point == 0 || !hsm_alg_is_ec(alg))
		return 0;
	return alg == SC_KEYALG_P256 ? 65 : 97;
}

/* ---- the token label, for backends whose token is a database ------------ */

/* The token label hsm.token asks for: NSS names its database token from
 * its initialisation string, so the label the URI matches is given there. */
static int token_label_of(const char *uri_text, char *out, size_t outlen)
{
	P11KitUri *uri = p11_kit_uri_new();
	CK_TOKEN_INFO *ti;
	size_t n;
	int rc = 0;

	if (uri == NULL)
		return SC_ERR_NOMEM;
	if (uri_text == NULL ||
	    p11_kit_uri_parse(uri_text, P11_KIT_URI_FOR_TOKEN, uri) != P11_KIT_URI_OK) {
		rc = sc_error_set(SC_ERR_CONFIG,
				  "hsm.token '%s' is not a PKCS#11 URI (RFC 7512), e.g. "
				  "pkcs11:token=smartcert-backend",
				  uri_text ? uri_text : "(none)");
		goto out;
	}
	ti = p11_kit_uri_get_token_info(uri);
	n = sizeof(ti->label);
	while (n > 0 && (ti->label[n - 1] == ' ' || ti->label[n - 1] == '\0'))
		n--;
	if (n == 0 || n >= outlen || memchr(ti->label, '\'', n) != NULL ||
	    memchr(ti->label, '"', n) != NULL) {
		rc = sc_error_set(SC_ERR_CONFIG,
				  "hsm.token '%s' must name the token (token=LABEL, no quotes): "
				  "the nss backend gives its database that label",
				  uri_text);
		goto out;
	}
	memcpy(out, ti->label, n);
	out[n] = '\0';
out:
	p11_kit_uri_free(uri);
	return rc;
}

/* ---- modules loaded directly (NSS) -------------------------------------- */

/* The one directly loaded module of the process, shared by every sc_hsm. */
static struct {
	pthread_mutex_t mu;
	void *dl;
	CK_FUNCTION_LIST *f;
	char args[4096 + 256];
	char path[4096];
	unsigned refs;
	pid_t pid;
} direct = { .mu = PTHREAD_MUTEX_INITIALIZER };

static int direct_load(const sc_hsm_params *p, const struct hsm_backend *be, CK_FUNCTION_LIST **out)
{
	char label[33], args[sizeof(direct.args)];
	const char *entry = be->entry_fips != NULL && !p->fips_off ? be->entry_fips : be->entry;
	CK_C_GetFunctionList get = NULL;
	CK_C_INITIALIZE_ARGS ia;
	CK_FUNCTION_LIST *f = NULL;
	void *dl = NULL;
	int rc, n, forked;
	CK_RV rv;

	if (p->nss_dir == NULL || p->nss_dir[0] != '/')
		return sc_error_set(SC_ERR_CONFIG,
				    "the nss backend needs hsm.nss_dir, the directory of its "
				    "database");
	rc = token_label_of(p->token_uri, label, sizeof(label));
	if (rc < 0)
		return rc;
	if (strchr(p->nss_dir, '\'') != NULL)
		return sc_error_set(SC_ERR_CONFIG, "hsm.nss_dir '%s' contains a quote", p->nss_dir);
	n = snprintf(args, sizeof(args),
		     "configdir='sql:%s' certPrefix='' keyPrefix='' secmod='secmod.db' "
		     "dbTokenDescription='%s' FIPSTokenDescription='%s'",
		     p->nss_dir, label, label);
	if (n < 0 || (size_t)n >= sizeof(args))
		return sc_error_set(SC_ERR_CONFIG, "hsm.nss_dir: path too long");

	pthread_mutex_lock(&direct.mu);
	/* A child after fork() starts again: NSS repeats its parent's random
	 * numbers in a child that does not initialise anew. */
	forked = direct.pid != 0 && direct.pid != getpid();
	if (forked) {
		direct.refs = 0;
		direct.f = NULL;
	}
	if (direct.refs > 0) {
		if (strcmp(direct.path, p->module_path) != 0 || strcmp(direct.args, args) != 0) {
			rc = sc_error_set(SC_ERR_CONFIG,
					  "the nss backend is already open in this process on "
					  "another database or module ('%s'): one process opens "
					  "one NSS database",
					  direct.path);
			goto out;
		}
		direct.refs++;
		*out = direct.f;
		rc = 0;
		goto out;
	}
	/* Without this NSS turns its SQLite cache on by itself on network file
	 * systems, and other processes stop seeing new token keys. */
	if (setenv("NSS_SDB_USE_CACHE", "no", 1) != 0) {
		rc = SC_ERR_NOMEM;
		goto out;
	}
	dl = dlopen(p->module_path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		rc = sc_error_set(SC_ERR_HSM_MODULE,
				  "cannot load backend PKCS#11 module '%s': %s; check hsm.module",
				  p->module_path, dlerror());
		goto out;
	}
	*(void **)&get = dlsym(dl, entry);
	if (get == NULL || get(&f) != CKR_OK || f == NULL) {
		rc = sc_error_set(SC_ERR_HSM_MODULE,
				  "backend PKCS#11 module '%s' has no usable %s: is it NSS's "
				  "libsoftokn3.so?",
				  p->module_path, entry);
		goto out;
	}
	memset(&ia, 0, sizeof(ia));
	ia.flags = CKF_OS_LOCKING_OK;
	ia.pReserved = args;
	rv = f->C_Initialize(&ia);
	if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED && forked) {
		/* a parent's instance, inherited across fork() */
		f->C_Finalize(NULL);
		rv = f->C_Initialize(&ia);
	}
	if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		rc = sc_error_set(SC_ERR_HSM_MODULE,
				  "backend PKCS#11 module '%s' is already initialised by other "
				  "code in this process, on a database smartcert did not choose",
				  p->module_path);
		goto out;
	}
	if (rv != CKR_OK) {
		rc = sc_error_set(SC_ERR_HSM_MODULE,
				  "backend PKCS#11 module '%s': C_Initialize on the database "
				  "in '%s' returned %s (0x%lx); check hsm.nss_dir",
				  p->module_path, p->nss_dir, sc_ckr_name(rv), (unsigned long)rv);
		goto out;
	}
	snprintf(direct.path, sizeof(direct.path), "%s", p->module_path);
	memcpy(direct.args, args, sizeof(args));
	direct.dl = dl;
	dl = NULL;
	direct.f = f;
	direct.refs = 1;
	direct.pid = getpid();
	*out = f;
	rc = 0;
out:
	pthread_mutex_unlock(&direct.mu);
	if (dl != NULL)
		dlclose(dl);
	return rc;
}

static void direct_unload(CK_FUNCTION_LIST *f)
{
	pthread_mutex_lock(&direct.mu);
	if (direct.refs > 0 && direct.f == f && direct.pid == getpid() && --direct.refs == 0) {
		f->C_Finalize(NULL);
		/* NSS leaves thread-local state behind that a dlclose() would
		 * turn into a crash at thread exit: the library stays mapped. */
		direct.f = NULL;
	}
	pthread_mutex_unlock(&direct.mu);
}

/* ---- loading ------------------------------------------------------------ */

int hsm_module_load(const sc_hsm_params *p, const struct hsm_backend **be_out,
		    CK_FUNCTION_LIST **out)
{
	const struct hsm_backend *be = hsm_backend_named(p->backend);
	CK_FUNCTION_LIST *f;
	CK_RV rv;

	*out = NULL;
	if (be == NULL)
		return sc_error_set(SC_ERR_CONFIG, "hsm.backend '%s' is not one of softhsm2, nss",
				    p->backend);
	*be_out = be;
	if (!p->module_path || !*p->module_path)
		return sc_error_set(SC_ERR_HSM_MODULE,
				    "no backend PKCS#11 module configured: set hsm.module");
	if (p->module_path[0] != '/')
		return sc_error_set(SC_ERR_HSM_MODULE,
				    "backend module path '%s' is not absolute: only an "
				    "explicit path is ever loaded",
				    p->module_path);
	if (access(p->module_path, R_OK) != 0)
		return sc_error_set(SC_ERR_HSM_MODULE,
				    "cannot load backend PKCS#11 module '%s': %s; check hsm.module",
				    p->module_path, strerror(errno));
	if (be->direct)
		return direct_load(p, be, out);
	/* SoftHSMv2 reads SOFTHSM2_CONF at its first C_Initialize in the
	 * process; setting it later has no effect. */
	if (p->softhsm_conf && *p->softhsm_conf && setenv("SOFTHSM2_CONF", p->softhsm_conf, 1) != 0)
		return sc_error_set(SC_ERR_NOMEM, "cannot set SOFTHSM2_CONF");

	f = p11_kit_module_load(p->module_path, 0);
	if (!f)
		return sc_error_set(SC_ERR_HSM_MODULE,
				    "cannot load backend PKCS#11 module '%s': %s; check hsm.module",
				    p->module_path,
				    p11_kit_message() ? p11_kit_message() : "load failed");
	rv = p11_kit_module_initialize(f);
	if (rv != CKR_OK) {
		p11_kit_module_release(f);
		return sc_error_set(
			SC_ERR_HSM_MODULE,
			"backend PKCS#11 module '%s': C_Initialize returned %s (0x%lx)%s",
			p->module_path, sc_ckr_name(rv), (unsigned long)rv,
			p->softhsm_conf ? "; check the SoftHSMv2 configuration "
					  "(hsm.softhsm_conf)" :
					  "");
	}
	*out = f;
	return 0;
}

void hsm_module_unload(const struct hsm_backend *be, CK_FUNCTION_LIST *f)
{
	if (!f)
		return;
	if (be->direct) {
		direct_unload(f);
		return;
	}
	/* Managed mode: this finalises our virtual instance only; the real
	 * module is finalised when its last user in the process lets go. */
	p11_kit_module_finalize(f);
	p11_kit_module_release(f);
}

int hsm_backend_prepare(const sc_hsm_params *p)
{
	const struct hsm_backend *be = hsm_backend_named(p->backend);

	/* the database directory: NSS creates its files, not the directory */
	if (be != NULL && be->direct && p->nss_dir != NULL && p->nss_dir[0] == '/' &&
	    sc_mkdir_p(p->nss_dir, 0700) != 0)
		return sc_error_set(SC_ERR_IO, "cannot create hsm.nss_dir '%s': %s", p->nss_dir,
				    strerror(errno));
	return 0;
}
