/*
 * unwrap-probe: can any secret key left on a token unwrap a blob?
 *
 *   unwrap-probe MODULE TOKEN_LABEL PIN_FILE BLOB_FILE...
 *
 * Logs in to the token labelled TOKEN_LABEL (SOFTHSM2_CONF from the
 * environment) with the PIN in PIN_FILE, lists every secret key on it, and
 * tries C_UnwrapKey (CKM_AES_KEY_WRAP_PAD, into a session private key of
 * type EC, then RSA) with each of them on the bytes of each BLOB_FILE.
 * With UNWRAP_PROBE_NSS_DIR set, the module is NSS's softoken on the
 * database in that directory (FIPS entry, RFC 5649 as CKM_AES_KEY_WRAP_KWP,
 * and an EC blob's last 65 or 97 bytes as its public point, CKA_NSS_DB),
 * as smartcert's nss backend uses it.
 * Prints one JSON line:
 *   {"secret_keys":N,"labels":["..."],"unwrapped":[["BLOB_FILE","label"],...]}
 * Exit 0 when it ran (whatever it found), 77 when the module cannot be
 * loaded, 1 on any other failure.  Used by test_ca_key_destroy.py.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#define MAX_KEYS 4096

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *b = NULL;
	long n;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		b = malloc((size_t)n + 1);
		if (b != NULL && fread(b, 1, (size_t)n, f) != (size_t)n) {
			free(b);
			b = NULL;
		}
		*len = (size_t)n;
	}
	fclose(f);
	return b;
}

static int find_slot(CK_FUNCTION_LIST *f, const char *label, CK_SLOT_ID *out)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;
	CK_TOKEN_INFO ti;
	size_t ll = strlen(label);

	if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return -1;
	for (i = 0; i < n; i++) {
		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (ll <= 32 && memcmp(ti.label, label, ll) == 0 &&
		    (ll == 32 || ti.label[ll] == ' ')) {
			*out = slots[i];
			return 0;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	CK_C_GetFunctionList gfl;
	CK_FUNCTION_LIST *f;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE s;
	CK_OBJECT_CLASS sk = CKO_SECRET_KEY, pk = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE find[] = { { CKA_CLASS, &sk, sizeof(sk) } };
	CK_OBJECT_HANDLE keys[MAX_KEYS];
	CK_ULONG nkeys = 0, i;
	char labels[MAX_KEYS][64];
	unsigned char *pin;
	size_t pin_len = 0;
	void *dl;
	int a, first = 1;
	const char *nss_dir;
	static char nss_args[8192];
	CK_C_INITIALIZE_ARGS init = { 0 };
	CK_MECHANISM_TYPE wrap_mech = CKM_AES_KEY_WRAP_PAD;

	if (argc < 5) {
		fprintf(stderr, "usage: %s MODULE TOKEN_LABEL PIN_FILE BLOB_FILE...\n", argv[0]);
		return 1;
	}
	dl = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		fprintf(stderr, "SKIP: cannot load %s: %s\n", argv[1], dlerror());
		return 77;
	}
	nss_dir = getenv("UNWRAP_PROBE_NSS_DIR");
	if (nss_dir != NULL && *nss_dir != '\0') {
		snprintf(nss_args, sizeof(nss_args),
			 "configdir='sql:%s' certPrefix='' keyPrefix='' secmod='secmod.db' "
			 "dbTokenDescription='%s' FIPSTokenDescription='%s'",
			 nss_dir, argv[2], argv[2]);
		init.flags = CKF_OS_LOCKING_OK;
		init.pReserved = nss_args;
		wrap_mech = 0x210B; /* CKM_AES_KEY_WRAP_KWP */
	}
	*(void **)&gfl = dlsym(dl, init.pReserved != NULL ? "FC_GetFunctionList" : "C_GetFunctionList");
	if (gfl == NULL || gfl(&f) != CKR_OK || f->C_Initialize(&init) != CKR_OK) {
		fprintf(stderr, "cannot initialise %s\n", argv[1]);
		return 1;
	}
	if (find_slot(f, argv[2], &slot) != 0) {
		fprintf(stderr, "no token labelled %s\n", argv[2]);
		return 1;
	}
	pin = read_file(argv[3], &pin_len);
	while (pin != NULL && pin_len > 0 && (pin[pin_len - 1] == '\n' || pin[pin_len - 1] == '\r'))
		pin_len--;
	if (pin == NULL ||
	    f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK ||
	    f->C_Login(s, CKU_USER, pin, pin_len) != CKR_OK) {
		fprintf(stderr, "cannot log in to %s\n", argv[2]);
		return 1;
	}
	free(pin);
	if (f->C_FindObjectsInit(s, find, 1) != CKR_OK ||
	    f->C_FindObjects(s, keys, MAX_KEYS, &nkeys) != CKR_OK ||
	    f->C_FindObjectsFinal(s) != CKR_OK) {
		fprintf(stderr, "cannot list the secret keys\n");
		return 1;
	}
	for (i = 0; i < nkeys; i++) {
		CK_ATTRIBUTE la = { CKA_LABEL, labels[i], sizeof(labels[i]) - 1 };

		if (f->C_GetAttributeValue(s, keys[i], &la, 1) != CKR_OK)
			la.ulValueLen = 0;
		labels[i][la.ulValueLen] = '\0';
	}
	printf("{\"secret_keys\":%lu,\"labels\":[", (unsigned long)nkeys);
	for (i = 0; i < nkeys; i++)
		printf("%s\"%s\"", i ? "," : "", labels[i]);
	printf("],\"unwrapped\":[");
	for (a = 4; a < argc; a++) {
		size_t bl = 0;
		unsigned char *blob = read_file(argv[a], &bl);

		if (blob == NULL) {
			fprintf(stderr, "cannot read %s\n", argv[a]);
			return 1;
		}
		for (i = 0; i < nkeys; i++) {
			/* as the backend's blobs are: SoftHSMv2's EC and RSA; NSS's
			 * EC with a P-256 or P-384 point at the end, and RSA */
			static const struct {
				CK_KEY_TYPE type;
				size_t point;
			} soft[] = { { CKK_EC, 0 }, { CKK_RSA, 0 } },
			  nss[] = { { CKK_EC, 65 }, { CKK_EC, 97 }, { CKK_RSA, 0 } };
			int use_nss = init.pReserved != NULL;
			int ntries = use_nss ? 3 : 2;

			for (int t = 0; t < ntries; t++) {
				CK_KEY_TYPE type = use_nss ? nss[t].type : soft[t].type;
				size_t pl = use_nss ? nss[t].point : soft[t].point;
				CK_MECHANISM mech = { wrap_mech, NULL, 0 };
				CK_BBOOL tru = CK_TRUE, fal = CK_FALSE;
				CK_ATTRIBUTE tmpl[] = {
					{ CKA_CLASS, &pk, sizeof(pk) },
					{ CKA_KEY_TYPE, &type, sizeof(type) },
					{ CKA_TOKEN, &fal, sizeof(fal) },
					{ CKA_PRIVATE, &tru, sizeof(tru) },
					{ CKA_SENSITIVE, &tru, sizeof(tru) },
					{ CKA_SIGN, &tru, sizeof(tru) },
					{ 0xD5A0DB00UL /* CKA_NSS_DB */, blob + bl - pl, pl },
				};
				CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;

				if (pl >= bl)
					continue;
				if (f->C_UnwrapKey(s, &mech, keys[i], blob, bl - pl, tmpl, pl ? 7 : 6, &h) ==
				    CKR_OK) {
					printf("%s[\"%s\",\"%s\"]", first ? "" : ",", argv[a], labels[i]);
					first = 0;
					f->C_DestroyObject(s, h);
					break;
				}
			}
		}
		free(blob);
	}
	printf("]}\n");
	f->C_Logout(s);
	f->C_CloseSession(s);
	f->C_Finalize(NULL);
	return 0;
}
