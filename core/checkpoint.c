/*
 * Signed checkpoints outside the store (sc_checkpoint.h): what an owner of
 * the store file cannot rewrite, because the signing key is in the HSM and
 * the log is elsewhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "sc_audit.h"
#include "sc_checkpoint.h"
#include "sc_err.h"
#include "sc_signer.h"
#include "sc_types.h"
#include "sc_util.h"

#define CP_LINE_MAX 1024
#define CP_MAGIC "smartcert-checkpoint v1 "
/* The CRL number counter (crl/sc_crl.h). */
#define CP_CRL_COUNTER "crl.number"

int sc_restored_at(sc_txn *txn, int64_t *out)
{
	const void *v = NULL;
	size_t len = 0, i;
	int64_t t = 0;
	int rv;

	*out = 0;
	if ((rv = sc_store_meta_find(txn, SC_META_RESTORED_AT, &v, &len, NULL)) != SC_OK)
		return rv;
	for (i = 0; i < len; i++) {
		unsigned char c = ((const unsigned char *)v)[i];

		if (c < '0' || c > '9' || t > (INT64_MAX - 9) / 10)
			return sc_error_set(SC_ERR_INTEGRITY, "the store's %s is not a time: the "
					    "store was edited; put back a backup (smartcert store "
					    "restore)", SC_META_RESTORED_AT);
		t = t * 10 + (c - '0');
	}
	*out = t;
	return SC_OK;
}

char *sc_checkpoint_dir(const sc_config *cfg)
{
	return sc_config_path(cfg, "audit.checkpoint_dir", "checkpoints");
}

char *sc_checkpoint_path(const sc_config *cfg, const char *name)
{
	char *dir = sc_checkpoint_dir(cfg), *p = NULL;
	size_t n;

	if (dir == NULL)
		return NULL;
	n = strlen(dir) + strlen(name) + 2;
	p = malloc(n);
	if (p != NULL)
		snprintf(p, n, "%s/%s", dir, name);
	free(dir);
	return p;
}

/* What the store says now. */
struct cp_state {
	uint64_t audit_seq, revlog_seq, crl_number;
	unsigned char audit_mac[32];
};

static int cp_read_state(sc_store *st, struct cp_state *s)
{
	sc_txn *txn = NULL;
	int rc;

	memset(s, 0, sizeof(*s));
	rc = sc_txn_begin(st, SC_TXN_READ, &txn);
	if (rc != SC_OK)
		return rc;
	rc = sc_audit_head_get(txn, &s->audit_seq, s->audit_mac);
	if (rc == SC_OK)
		rc = sc_store_revlog_last(txn, &s->revlog_seq);
	if (rc == SC_OK)
		rc = sc_store_counter_get(txn, CP_CRL_COUNTER, &s->crl_number);
	sc_txn_abort(txn);
	return rc;
}

/* The last line of the log (without its newline) into last, and the line
 * before it into before when before != NULL; "" for a line the log does
 * not have.  Each buffer holds len bytes; fd is open for reading. */
static int cp_last_lines(int fd, char *last, char *before, size_t len)
{
	struct stat sb;
	off_t start;
	ssize_t n;
	size_t want = before != NULL ? 2 * len : len;
	char *buf, *nl, *nl2;
	int rc = SC_OK;

	last[0] = '\0';
	if (before != NULL)
		before[0] = '\0';
	if (fstat(fd, &sb) != 0)
		return sc_error_set(SC_ERR_IO, "checkpoint log: %s", strerror(errno));
	if (sb.st_size == 0)
		return SC_OK;
	if ((buf = malloc(want)) == NULL)
		return SC_ERR_NOMEM;
	start = sb.st_size > (off_t)want - 1 ? sb.st_size - (off_t)want + 1 : 0;
	n = pread(fd, buf, want - 1, start);
	if (n <= 0) {
		rc = sc_error_set(SC_ERR_IO, "checkpoint log: %s", strerror(errno));
		goto out;
	}
	buf[n] = '\0';
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	nl = strrchr(buf, '\n');
	if ((nl == NULL && start > 0) || strlen(nl != NULL ? nl + 1 : buf) >= len) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "the checkpoint log's last line is too long");
		goto out;
	}
	memcpy(last, nl != NULL ? nl + 1 : buf, strlen(nl != NULL ? nl + 1 : buf) + 1);
	if (before == NULL || nl == NULL)
		goto out;
	*nl = '\0';
	nl2 = strrchr(buf, '\n');
	if ((nl2 == NULL && start > 0) || strlen(nl2 != NULL ? nl2 + 1 : buf) >= len) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "a checkpoint line is too long");
		goto out;
	}
	memcpy(before, nl2 != NULL ? nl2 + 1 : buf, strlen(nl2 != NULL ? nl2 + 1 : buf) + 1);
out:
	free(buf);
	return rc;
}

static void hexs(const unsigned char *p, size_t n, char *out)
{
	sc_hex_encode(p, n, out);
}

int sc_checkpoint_write(const sc_config *cfg, sc_store *st, sc_hsm *hsm, const char *why)
{
	char *log = sc_checkpoint_path(cfg, SC_CHECKPOINT_LOG);
	char last[CP_LINE_MAX], line[CP_LINE_MAX + 256], mac_hex[65], prev_hex[65];
	unsigned char prev[32], digest[32];
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	char *sig_b64 = NULL;
	struct cp_state s;
	sc_hsm_key *key = NULL;
	struct stat sb;
	int fd = -1, rc, n;

	if (log == NULL)
		return SC_ERR_NOMEM;
	rc = sc_hsm_find_token_key(hsm, SC_LABEL_CHECKPOINT, &key);
	if (rc != SC_OK)
		goto out;
	fd = open(log, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = sc_error_set(SC_ERR_IO, "cannot open the checkpoint log %s: %s", log,
				  strerror(errno));
		goto out;
	}
	/* One writer at a time: the new line chains to the last one. */
	if (flock(fd, LOCK_EX) != 0) {
		rc = sc_error_set(SC_ERR_IO, "cannot lock %s: %s", log, strerror(errno));
		goto out;
	}
	if ((rc = cp_last_lines(fd, last, NULL, sizeof(last))) != SC_OK)
		goto out;
	if (last[0] == '\0')
		memset(prev, 0, sizeof(prev));
	else
		SHA256((const unsigned char *)last, strlen(last), prev);
	if ((rc = cp_read_state(st, &s)) != SC_OK)
		goto out;
	hexs(s.audit_mac, 32, mac_hex);
	hexs(prev, 32, prev_hex);
	n = snprintf(line, sizeof(line),
		     CP_MAGIC "time=%" PRId64 " audit_seq=%" PRIu64 " audit_mac=%s revlog_seq=%" PRIu64
		     " crl_number=%" PRIu64 " why=%s prev=%s",
		     sc_now(), s.audit_seq, mac_hex, s.revlog_seq, s.crl_number, why, prev_hex);
	if (n < 0 || (size_t)n >= CP_LINE_MAX - 160) {
		rc = sc_error_set(SC_ERR_INVALID, "checkpoint line too long");
		goto out;
	}
	SHA256((const unsigned char *)line, (size_t)n, digest);
	if ((rc = sc_sign_digest(hsm, key, NID_sha256, digest, 32, &sig, &sig_len)) != SC_OK)
		goto out;
	if ((rc = sc_b64_encode(sig, sig_len, &sig_b64)) != SC_OK)
		goto out;
	n = snprintf(line + n, sizeof(line) - (size_t)n, " sig=%s\n", sig_b64) + n;
	if (fstat(fd, &sb) != 0) {
		rc = sc_error_set(SC_ERR_IO, "%s: %s", log, strerror(errno));
		goto out;
	}
	if (write(fd, line, (size_t)n) != n || fsync(fd) != 0) {
		int e = errno;

		/* A torn line would make the log unreadable: cut it off again. */
		if (ftruncate(fd, sb.st_size) != 0 || fsync(fd) != 0)
			e = errno;
		rc = sc_error_set(e == ENOSPC ? SC_ERR_STORE_FULL : SC_ERR_IO,
				  "cannot append to %s: %s", log, strerror(e));
		goto out;
	}
	rc = SC_OK;
out:
	if (fd >= 0)
		close(fd);       /* releases the lock */
	sc_hsm_key_free(hsm, key);
	free(sig);
	free(sig_b64);
	free(log);
	return rc;
}

int sc_checkpoint_key_hash(EVP_PKEY *pk, char hex[2 * SC_CHECKPOINT_KEY_HASH_LEN + 1])
{
	unsigned char *der = NULL, h[SC_CHECKPOINT_KEY_HASH_LEN];
	int n = i2d_PUBKEY(pk, &der);

	if (n <= 0)
		return sc_error_set_openssl(SC_ERR_CRYPTO, "encoding the checkpoint key");
	SHA256(der, (size_t)n, h);
	OPENSSL_free(der);
	hexs(h, sizeof(h), hex);
	return SC_OK;
}

/* The public key beside the log is the one the configuration pins
 * (audit.checkpoint_key, which must be set). */
static int cp_key_is_pinned(const sc_config *cfg, EVP_PKEY *pk, const char *pub)
{
	const char *pin = sc_config_str(cfg, "audit.checkpoint_key", NULL);
	char hex[2 * SC_CHECKPOINT_KEY_HASH_LEN + 1];
	int rc;

	if (strncmp(pin, "sha256:", 7) != 0 || strlen(pin + 7) != sizeof(hex) - 1)
		return sc_error_set(SC_ERR_CONFIG, "audit.checkpoint_key must be sha256: and 64 hex "
				    "digits, as smartcert init wrote it");
	if ((rc = sc_checkpoint_key_hash(pk, hex)) != SC_OK)
		return rc;
	if (strcasecmp(pin + 7, hex) != 0)
		return sc_error_set(SC_ERR_INTEGRITY, "%s is not the checkpoint key the "
				    "configuration names (audit.checkpoint_key): the checkpoint "
				    "directory was altered (put back the file smartcert init wrote, "
				    "from a backup)", pub);
	return SC_OK;
}

/* The public key beside the log is the HSM's checkpoint key: its key
 * identifier (SHA-1 of the key bits) is that key's CKA_ID.  Otherwise
 * whoever can write the checkpoint directory could sign a log of their own
 * under a key of their own. */
static int cp_key_is_hsm_key(sc_hsm *hsm, EVP_PKEY *pk, const char *pub)
{
	unsigned char want[SHA_DIGEST_LENGTH], id[64];
	size_t id_len = sizeof(id);
	X509_PUBKEY *xpk = NULL;
	const unsigned char *bits;
	int bits_len, rc;

	if (!X509_PUBKEY_set(&xpk, pk) ||
	    !X509_PUBKEY_get0_param(NULL, &bits, &bits_len, NULL, xpk)) {
		X509_PUBKEY_free(xpk);
		return sc_error_set_openssl(SC_ERR_CRYPTO, "reading the checkpoint key");
	}
	SHA1(bits, (size_t)bits_len, want);
	X509_PUBKEY_free(xpk);
	if ((rc = sc_hsm_token_key_id(hsm, SC_LABEL_CHECKPOINT, id, &id_len)) != SC_OK)
		return rc;
	if (id_len != sizeof(want) || memcmp(id, want, sizeof(want)) != 0)
		return sc_error_set(SC_ERR_INTEGRITY, "%s is not the HSM's checkpoint key: the "
				    "checkpoint directory was altered (put back the file smartcert "
				    "init wrote, from a backup)", pub);
	return SC_OK;
}

static int cp_verify_line(const sc_config *cfg, sc_hsm *hsm, const char *line)
{
	char *pub = sc_checkpoint_path(cfg, SC_CHECKPOINT_PUB);
	const char *sigp = strstr(line, " sig=");
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	EVP_PKEY *pk = NULL;
	EVP_MD_CTX *md = NULL;
	FILE *f = NULL;
	int rc = SC_ERR_INTEGRITY;

	if (pub == NULL)
		return SC_ERR_NOMEM;
	if (sigp == NULL || strncmp(line, CP_MAGIC, strlen(CP_MAGIC)) != 0) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "the newest checkpoint is not a checkpoint line");
		goto out;
	}
	f = fopen(pub, "r");
	if (f == NULL || (pk = PEM_read_PUBKEY(f, NULL, NULL, NULL)) == NULL) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "cannot read the checkpoint key %s", pub);
		goto out;
	}
	/* The pin settles which key it is.  Without one (a deployment made
	 * before it), the HSM's key does, at the price of a search of the
	 * token, which SoftHSMv2 answers by reading every object on it. */
	if (sc_config_str(cfg, "audit.checkpoint_key", NULL) != NULL)
		rc = cp_key_is_pinned(cfg, pk, pub);
	else
		rc = hsm != NULL ? cp_key_is_hsm_key(hsm, pk, pub) : SC_OK;
	if (rc != SC_OK)
		goto out;
	if (sc_b64_decode(sigp + 5, strlen(sigp + 5), &sig, &sig_len) != SC_OK) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "the newest checkpoint's signature is not base64");
		goto out;
	}
	md = EVP_MD_CTX_new();
	if (md == NULL || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) != 1 ||
	    EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)line,
			     (size_t)(sigp - line)) != 1) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "the newest checkpoint's signature does not "
				  "verify: the checkpoint log was altered");
		goto out;
	}
	rc = SC_OK;
out:
	if (f != NULL)
		fclose(f);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pk);
	free(sig);
	free(pub);
	return rc;
}

int sc_checkpoint_check(const sc_config *cfg, sc_store *st, sc_hsm *hsm)
{
	char *log = sc_checkpoint_path(cfg, SC_CHECKPOINT_LOG);
	char last[CP_LINE_MAX], before[CP_LINE_MAX], f_mac[66], f_prev[66], link_hex[65];
	unsigned char want[32], have[32], link[32];
	struct cp_state s;
	uint64_t seq, revlog_seq, crl_number;
	size_t wlen = 0;
	sc_txn *txn = NULL;
	int fd = -1, rc;

	if (log == NULL)
		return SC_ERR_NOMEM;
	if ((rc = cp_read_state(st, &s)) != SC_OK)
		goto out;
	fd = open(log, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT && s.audit_seq == 0) {
			rc = SC_OK;       /* a store being created */
			goto out;
		}
		rc = sc_error_set(SC_ERR_INTEGRITY, "the checkpoint log %s is missing but the store "
				  "holds %" PRIu64 " audit records: refusing to serve a store that "
				  "cannot be checked (restore the log, or `smartcert store restore`)",
				  log, s.audit_seq);
		goto out;
	}
	if ((rc = cp_last_lines(fd, last, before, sizeof(last))) != SC_OK)
		goto out;
	if (last[0] == '\0') {
		rc = s.audit_seq == 0 ? SC_OK
				      : sc_error_set(SC_ERR_INTEGRITY, "the checkpoint log %s is "
						     "empty but the store holds audit records",
						     log);
		goto out;
	}
	if ((rc = cp_verify_line(cfg, hsm, last)) != SC_OK)
		goto out;
	/* The line verified: it is one sc_checkpoint_write wrote, fields in
	 * its order (a longer MAC reads as 65 characters and is refused). */
	if (sscanf(last,
		   CP_MAGIC "time=%*[-0-9] audit_seq=%" SCNu64 " audit_mac=%65s revlog_seq=%" SCNu64
			    " crl_number=%" SCNu64 " why=%*s prev=%65s",
		   &seq, f_mac, &revlog_seq, &crl_number, f_prev) != 5 ||
	    strlen(f_mac) != 64 || strlen(f_prev) != 64 ||
	    sc_hex_decode(f_mac, want, sizeof(want), &wlen) != SC_OK || wlen != 32) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "the newest checkpoint cannot be read");
		goto out;
	}
	/* A signed line copied to the end of an append-only log verifies on
	 * its own; it does not follow the line before it. */
	if (before[0] == '\0')
		memset(link, 0, sizeof(link));
	else
		SHA256((const unsigned char *)before, strlen(before), link);
	hexs(link, sizeof(link), link_hex);
	if (strcmp(f_prev, link_hex) != 0) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "the newest checkpoint in %s does not follow the "
				  "line before it: a line was copied or the log rewritten; refusing "
				  "to serve the store (scripts/verify-checkpoints.sh names the line)",
				  log);
		goto out;
	}
	if (s.audit_seq < seq) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "the store's audit chain ends at record %" PRIu64
				  " but the newest checkpoint (%s) vouches for record %" PRIu64
				  ": the store was rolled back or truncated; refusing to serve it "
				  "(to go back on purpose: smartcert store restore)",
				  s.audit_seq, log, seq);
		goto out;
	}
	/* The revocation log and the CRL number only move forward: a store
	 * whose counters are behind the checkpoint had them put back (a CRL
	 * number issued twice, a revocation undone). */
	if (s.revlog_seq < revlog_seq || s.crl_number < crl_number) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "the store's revocation log ends at %" PRIu64
				  " and its CRL number is %" PRIu64 ", but the newest checkpoint (%s) "
				  "vouches for %" PRIu64 " and %" PRIu64 ": the store was rolled back "
				  "or edited; refusing to serve it",
				  s.revlog_seq, s.crl_number, log, revlog_seq, crl_number);
		goto out;
	}
	rc = sc_txn_begin(st, SC_TXN_READ, &txn);
	if (rc != SC_OK)
		goto out;
	rc = seq == 0 ? (memset(have, 0, 32), SC_OK) : sc_audit_mac_at(txn, seq, have);
	sc_txn_abort(txn);
	if (rc == SC_ERR_NOT_FOUND || (rc == SC_OK && CRYPTO_memcmp(have, want, 32) != 0)) {
		rc = sc_error_set(SC_ERR_INTEGRITY, "the store's audit record %" PRIu64 " is not "
				  "the one the newest checkpoint vouches for: the store was replaced "
				  "or rewritten; refusing to serve it", seq);
		goto out;
	}
out:
	if (fd >= 0)
		close(fd);
	free(log);
	return rc;
}
