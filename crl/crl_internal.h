/*
 * Internals of the CRL builder shared by build.c, publish.c and show.c.
 */
#ifndef SC_CRL_INTERNAL_H
#define SC_CRL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "sc_der.h"
#include "sc_store.h"
#include "sc_types.h"

/* DER content octets of the OIDs we emit and read. */
extern const unsigned char sc_crl_oid_aki[3], sc_crl_oid_number[3], sc_crl_oid_delta[3],
	sc_crl_oid_idp[3], sc_crl_oid_freshest[3], sc_crl_oid_reason[3],
	sc_crl_oid_invalidity[3];

/* The encoded revokedCertificates entries of one CRL, in serial order once
 * sc_crl_list_finish() has run.  Entries are appended in whatever order the
 * index yields; out-of-order input is detected and sorted once at the end. */
typedef struct sc_crl_list {
	sc_der buf;
	size_t count;
	int unsorted;
	sc_serial last;
} sc_crl_list;

void sc_crl_list_init(sc_crl_list *l);
void sc_crl_list_free(sc_crl_list *l);
/* Append one entry.  reason < 0 or 0 (unspecified) omits reasonCode (RFC 5280
 * §5.3.1: use no extension rather than unspecified); invalidity 0 omits
 * invalidityDate. */
void sc_crl_list_add(sc_crl_list *l, const sc_serial *serial, int64_t date, int reason,
		     int64_t invalidity);
/* Sort by serial and drop duplicate serials (keeping the last one added). */
int sc_crl_list_finish(sc_crl_list *l);

/* Compare two positive minimal INTEGER contents numerically. */
int sc_crl_serial_cmp(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen);

/* The fixed parts of a TBSCertList. */
typedef struct sc_crl_tbs {
	const unsigned char *algid;
	size_t algid_len;
	const unsigned char *issuer;
	size_t issuer_len;
	int64_t this_update;
	int64_t next_update;
	const sc_der *exts;      /* concatenated Extension TLVs (may be empty) */
} sc_crl_tbs;

/* Encode the TBSCertList into `out` (which must be empty): the entries of
 * lists[0..n-1] merged in serial order (n == 1: one list).  An empty
 * revokedCertificates is omitted, as RFC 5280 requires.  *count receives the
 * number of entries written. */
int sc_crl_tbs_encode(const sc_crl_tbs *t, sc_crl_list *const *lists, size_t n,
		      sc_der *out, size_t *count);

/* Where the revocation log ends, and whether a keyCompromise revocation is
 * among the events seen (the watcher publishes those at once). */
typedef struct sc_crl_loghead {
	uint64_t head;
	int key_compromise;
} sc_crl_loghead;
void sc_crl_loghead_note(sc_crl_loghead *h, const sc_revlog *e);

/* Extension values. */
void sc_crl_ext_aki(sc_der *exts, const unsigned char *keyid, size_t len);
void sc_crl_ext_number(sc_der *exts, uint64_t number);
void sc_crl_ext_delta(sc_der *exts, uint64_t base);
enum { SC_CRL_ONLY_USER = 1, SC_CRL_ONLY_CA = 2 };
/* issuingDistributionPoint (critical): fullName `uri` and the
 * onlyContainsUserCerts or onlyContainsCACerts flag. */
void sc_crl_ext_idp(sc_der *exts, const char *uri, int only);
void sc_crl_ext_freshest(sc_der *exts, const char *uri);

#endif
