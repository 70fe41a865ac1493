/*
 * The signing service's process-wide state: the deployment it opens, the
 * backend HSM (opened at the first gateway login, and never again with a
 * PIN the backend refused), the trusted authorisation keys and the limits
 * read from the configuration.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "internal.h"
#include "sc_checkpoint.h"
#include "sc_util.h"

struct sd_service sd = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.qlock = PTHREAD_MUTEX_INITIALIZER,
	.qcond = PTHREAD_COND_INITIALIZER,
};

void sd_log(const char *fmt, ...)
{
	va_list ap;
	char line[1024];

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "smartcert-signd: %s\n", line);
}

int sd_logged_in(const struct sd_session *s)
{
	return s->app != NULL && __atomic_load_n(&s->app->logged_in, __ATOMIC_ACQUIRE);
}

/* The PIN source's identity: a rejected PIN is latched until the source
 * changes (a new file, a new mtime), so a wrong PIN is presented once, not
 * at every gateway login (which would lock the backend token). */
static void pin_source_stamp(char *out, size_t len)
{
	const char *src = sc_config_str(sd.dep->cfg, "hsm.pin_source", "file:secrets/backend.pin");
	char path[4096];
	struct stat st;

	snprintf(out, len, "%s", src);
	if (strncmp(src, "file:", 5) != 0)
		return;
	if (src[5] == '/')
		snprintf(path, sizeof(path), "%s", src + 5);
	else
		snprintf(path, sizeof(path), "%s/%s", sc_config_dir(sd.dep->cfg), src + 5);
	if (stat(path, &st) == 0)
		snprintf(out, len, "%s@%lld.%09ld", src, (long long)st.st_mtim.tv_sec,
			 st.st_mtim.tv_nsec);
}

static char sd_pin_refused_stamp[512];

CK_RV sd_get_hsm(sc_hsm **out)
{
	sc_hsm_params *p = NULL;
	char stamp[512];
	CK_RV rv = CKR_OK;
	int rc;

	*out = NULL;
	pthread_mutex_lock(&sd.lock);
	if (sd.hsm == NULL) {
		pin_source_stamp(stamp, sizeof(stamp));
		if (sd.hsm_pin_refused && strcmp(stamp, sd_pin_refused_stamp) == 0) {
			pthread_mutex_unlock(&sd.lock);
			return CKR_DEVICE_ERROR;
		}
		sd.hsm_pin_refused = 0;
		p = calloc(1, sizeof(*p));     /* large: paths */
		rc = p == NULL ? SC_ERR_NOMEM : sc_hsm_params_from_config(sd.dep->cfg, p);
		if (rc == SC_OK)
			rc = sc_hsm_open(p, &sd.hsm);   /* retries a busy token */
		if (rc == SC_OK)
			sc_deploy_use_hsm_for_audit(sd.hsm);   /* the audit chain's key */
		if (rc != SC_OK) {
			sd_log("cannot open the backend HSM: %s: %s", sc_strerror(rc),
			       sc_error_detail());
			if (rc == SC_ERR_HSM_PIN || rc == SC_ERR_HSM_LOCKED) {
				sd.hsm_pin_refused = 1;
				snprintf(sd_pin_refused_stamp, sizeof(sd_pin_refused_stamp), "%s",
					 stamp);
				sd_log("the backend refused its PIN: not presenting it again until "
				       "the PIN source changes");
			}
			rv = rc == SC_ERR_NOMEM ? CKR_HOST_MEMORY : CKR_DEVICE_ERROR;
		}
		if (p != NULL)
			OPENSSL_clear_free(p, sizeof(*p));
	}
	*out = sd.hsm;
	pthread_mutex_unlock(&sd.lock);
	return rv;
}

void sd_hsm_tick(void)
{
	sc_hsm *hsm;

	/* opened lazily by the first login, under the lock */
	pthread_mutex_lock(&sd.lock);
	hsm = sd.hsm;
	pthread_mutex_unlock(&sd.lock);
	sc_hsm_tick(hsm);
}

int sc_signd_open(const char *config_path)
{
	const char *path = sc_config_locate(config_path);
	const sc_config *cfg;
	unsigned char h[SHA256_DIGEST_LENGTH];
	const char *s;
	int64_t kcap = 0;
	int dbg = 0;
	int rc;

	if (path == NULL)
		return sc_error_set(SC_ERR_CONFIG, "no configuration: give --config or set "
				    "SMARTCERT_CONF");
	sd.config_path = strdup(path);
	if (sd.config_path == NULL)
		return SC_ERR_NOMEM;
	rc = sc_deploy_open(path, SC_DEPLOY_NO_HSM | SC_DEPLOY_NO_CA, &sd.dep);
	if (rc != SC_OK)
		return rc;
	rc = sc_deploy_check_private(sd.dep, 1);
	if (rc != SC_OK)
		return rc;
	cfg = sd.dep->cfg;
	if (sc_config_bool(cfg, "signd.debug", 0, &dbg) == SC_OK && dbg)
		sd.debug = 1;
	s = sc_config_str(cfg, "gateway.token_label", "smartcert");
	snprintf(sd.token_label, sizeof(sd.token_label), "%s", s);
	if (sc_config_int(cfg, "authz.lock_threshold", 5, &sd.lock_threshold) != SC_OK ||
	    sc_config_int(cfg, "authz.lock_seconds", 300, &sd.lock_seconds) != SC_OK ||
	    sc_config_int(cfg, "signd.garbage_threshold", 20, &sd.garbage_threshold) != SC_OK ||
	    sc_config_int(cfg, "signd.garbage_window", 60, &sd.garbage_window) != SC_OK ||
	    sd.lock_threshold < 1 || sd.lock_seconds < 0 || sd.garbage_threshold < 1 ||
	    sd.garbage_window < 1)
		return sc_error_set(SC_ERR_CONFIG, "%s: authz.lock_threshold, authz.lock_seconds, "
				    "signd.garbage_threshold and signd.garbage_window must be "
				    "positive numbers", path);
	if (sc_config_int(cfg, "signd.key_cache", 256, &kcap) != SC_OK || kcap < 0 ||
	    kcap > 1000000)
		return sc_error_set(SC_ERR_CONFIG, "%s: signd.key_cache must be 0..1000000", path);
	if (sd_kc_init((size_t)kcap) != SC_OK)
		return SC_ERR_NOMEM;
	s = sc_config_str(cfg, "signd.deposit_gateways", "");
	sd.deposit_gateways = malloc(strlen(s) + 3);
	if (sd.deposit_gateways == NULL)
		return SC_ERR_NOMEM;
	/* " a b c ": separators (spaces, commas) normalised to spaces. */
	snprintf(sd.deposit_gateways, strlen(s) + 3, " %s ", s);
	for (char *q = sd.deposit_gateways; *q != '\0'; q++)
		if (*q == ',' || *q == '\t')
			*q = ' ';
	rc = sc_authz_trust_load(cfg, &sd.trust);
	if (rc != SC_OK)
		return rc;
	sd.max_skew = sc_authz_trust_skew(sd.trust);
	{
		/* After `smartcert store restore`: tokens valid from before it
		 * may have been spent in the lost window. */
		sc_txn *txn = NULL;

		rc = sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn);
		if (rc == SC_OK)
			rc = sc_restored_at(txn, &sd.restored_at);
		sc_txn_abort(txn);
		if (rc != SC_OK)
			return rc;
	}
	SHA256((const unsigned char *)sc_config_dir(cfg), strlen(sc_config_dir(cfg)), h);
	sc_hex_encode(h, 8, sd.serial);
	sd_commit_init();
	return SC_OK;
}

void sc_signd_close(void)
{
	struct sd_app *a, *an;
	struct sd_throttle *t, *tn;

	pthread_mutex_lock(&sd.lock);
	sd_kc_flush(sd.hsm);
	sc_hsm_close(sd.hsm);
	sd.hsm = NULL;
	sc_authz_trust_free(sd.trust);
	sd.trust = NULL;
	sc_deploy_close(sd.dep);
	sd.dep = NULL;
	free(sd.config_path);
	sd.config_path = NULL;
	free(sd.deposit_gateways);
	sd.deposit_gateways = NULL;
	for (a = sd.apps; a != NULL; a = an) {
		an = a->next;
		OPENSSL_clear_free(a, sizeof(*a));
	}
	sd.apps = NULL;
	for (t = sd.login_throttle; t != NULL; t = tn) {
		tn = t->next;
		free(t);
	}
	for (t = sd.garbage_throttle; t != NULL; t = tn) {
		tn = t->next;
		free(t);
	}
	sd.login_throttle = sd.garbage_throttle = NULL;
	pthread_mutex_unlock(&sd.lock);
}

const sc_config *sc_signd_config(void)
{
	return sd.dep != NULL ? sd.dep->cfg : NULL;
}

/* Signed checkpoints of what the service wrote (sc_checkpoint.h): every
 * signd.checkpoint_seconds while records are being appended, and at stop. */
void sd_checkpoint_tick(int force)
{
	static int64_t last_time;
	static uint64_t last_count;
	int64_t now = sc_now(), every = 60;
	uint64_t count = sc_audit_appended();
	sc_hsm *hsm;

	if (count == last_count)
		return;
	(void)sc_config_int(sd.dep->cfg, "signd.checkpoint_seconds", 60, &every);
	if (!force && now - last_time < every)
		return;
	pthread_mutex_lock(&sd.lock);
	hsm = sd.hsm;
	pthread_mutex_unlock(&sd.lock);
	if (hsm == NULL)
		return;
	if (sc_checkpoint_write(sd.dep->cfg, sd.dep->store, hsm, "signd") != SC_OK) {
		sd_log("cannot write a checkpoint: %s", sc_error_detail());
		return;
	}
	last_time = now;
	last_count = count;
}

int sd_gateway_deposits(const char *gateway)
{
	char pat[SC_ID_MAX + 3];

	if (gateway == NULL || gateway[0] == '\0' || sd.deposit_gateways == NULL)
		return 0;
	snprintf(pat, sizeof(pat), " %s ", gateway);
	return strstr(sd.deposit_gateways, pat) != NULL;
}
