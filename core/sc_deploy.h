/*
 * A deployment: the configuration, the store, the backend HSM and the CA
 * certificates, opened together.  Every command and daemon starts here.
 *
 * Layout of an embedded deployment created by `smartcert init --dir DIR`:
 *   DIR/smartcert.conf            the configuration (docs/configuration.md)
 *   DIR/hsm/softhsm2.conf         SoftHSMv2 config of its own
 *   DIR/hsm/tokens/               SoftHSMv2 token directory
 *   DIR/secrets/backend.pin       backend (HSM user) PIN, mode 0600
 *   DIR/secrets/so.pin            backend SO PIN, mode 0600
 *   DIR/secrets/gateway.pin       gateway PIN for the PKCS#11 module, 0600
 *   DIR/secrets/authz-demo.key    demo authorisation-service key, 0600
 *   DIR/authz/authz-demo.pub.pem  its public key (trusted in the config)
 *   DIR/store/                    the LMDB environment
 *   DIR/ca/root-ca.pem, issuing-ca.pem, ocsp-signer.pem, chain.pem
 *   DIR/crl/                      published CRLs
 *
 * CA key labels on the backend token (non-extractable token objects).
 */
#ifndef SC_DEPLOY_H
#define SC_DEPLOY_H

#include <stdint.h>
#include <openssl/x509.h>
#include "sc_config.h"
#include "sc_store.h"
#include "sc_hsm.h"

#define SC_LABEL_ROOT_CA     "smartcert-root-ca"
#define SC_LABEL_ISSUING_CA  "smartcert-issuing-ca"
#define SC_LABEL_OCSP        "smartcert-ocsp-signer"

/* Store metadata names holding the CA certificates (DER). */
#define SC_META_ROOT_CERT    "ca.root.der"
#define SC_META_ISSUING_CERT "ca.issuing.der"
#define SC_META_OCSP_CERT    "ca.ocsp.der"

typedef struct sc_deploy {
	sc_config *cfg;
	sc_store *store;
	sc_hsm *hsm;              /* NULL when opened with SC_DEPLOY_NO_HSM */
	X509 *root_cert;          /* NULL until init created them */
	X509 *issuing_cert;
	X509 *ocsp_cert;
	uint32_t crl_partitions;  /* crl.partitions, fixed for the CA's life */
	uint64_t audit_mark;      /* sc_audit_appended() at open */
} sc_deploy;

enum {
	SC_DEPLOY_NO_HSM = 1 << 0,     /* store + config only (read commands) */
	SC_DEPLOY_STORE_RDONLY = 1 << 1,
	SC_DEPLOY_NO_CA = 1 << 2,      /* do not require CA certificates (init) */
	SC_DEPLOY_CREATE_STORE = 1 << 3, /* create the store if absent (init) */
	/* do not compare the store with the newest checkpoint (audit verify,
	 * which reports the chain first; store restore) */
	SC_DEPLOY_NO_CHECKPOINT = 1 << 4,
};

/* Open the deployment whose config is `config_path` (or $SMARTCERT_CONF
 * when NULL).  Errors carry a detail telling the user what to fix:
 * SC_ERR_CONFIG (no/invalid config, crl.partitions outside 1..65536),
 * SC_ERR_NOT_FOUND (no store, or no CA certificates: "run smartcert init"),
 * the store's and sc_hsm_open()'s errors.  *out is NULL on error.
 * Not fork-safe: a child process opens its own deployment. */
int sc_deploy_open(const char *config_path, unsigned flags, sc_deploy **out);
/* The store the configuration names (store.backend: "lmdb" in store.path,
 * or "postgresql": schema store.pg_schema of the database that the secret
 * source store.pg_conninfo, or else libpq's environment, names), opened
 * with SC_STORE_* flags. */
int sc_deploy_open_store(const sc_config *cfg, unsigned sflags, sc_store **out);
void sc_deploy_close(sc_deploy *d);

/* Key this process's audit appends and checks with `hsm`'s audit key
 * (sc_audit_set_mac); NULL forgets it.  sc_deploy_open() does it whenever
 * it opens the HSM; a process that opens its HSM later (the signing
 * service) calls it then. */
void sc_deploy_use_hsm_for_audit(sc_hsm *hsm);

/* The private parts of a deployment (the secrets directory, the store
 * directory and its files, the HSM token directory) must be readable by
 * their owner alone.  Group- or world-readable ones are named on stderr;
 * with `strict` the first one found is an error (SC_ERR_PERMISSION, with
 * the chmod that fixes it).  Parts that do not exist are skipped. */
int sc_deploy_check_private(const sc_deploy *d, int strict);

/* Reload CA certificates from the store (after init, or on SIGHUP).  All
 * three are required (SC_ERR_NOT_FOUND "run smartcert init"); on error the
 * certificates already loaded stay in place.  Not safe against threads
 * reading d->*_cert at the same time: callers serialise reloads. */
int sc_deploy_load_ca(sc_deploy *d);

/* CRL partition of a serial: fixed at issuance, uniform over partitions
 * (the first four serial bytes, big-endian, modulo the count). */
uint32_t sc_crl_partition_of(const sc_serial *serial, uint32_t partitions);

/* Published CRL file names (relative to crl.out_dir and crl.base_url):
 *   full CRL "full.crl", its delta "full-delta.crl", the root's "root.crl",
 *   partition N "part-N.crl" (N decimal), its delta "part-N-delta.crl". */
#define SC_CRL_FULL_NAME "full.crl"
#define SC_CRL_FULL_DELTA_NAME "full-delta.crl"
/* The root's CRL (an ARL: CA certificates only), named by the issuing CA
 * certificate's CRL distribution point. */
#define SC_CRL_ROOT_NAME "root.crl"
void sc_crl_part_name(uint32_t partition, int delta, char *buf, size_t len);

#endif
