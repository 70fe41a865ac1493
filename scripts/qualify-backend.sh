#!/usr/bin/env bash
# Qualify a PKCS#11 module (a hardware HSM or another software token) as
# smartcert's backend: runs tests/hsm/qualify-backend against it and prints
# PASS/FAIL/SKIP per requirement.  Exit 0 only when every required check passes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage() {
	cat <<'USAGE'
usage: scripts/qualify-backend.sh --module PATH [--token-label L | --slot N]
                                  [--pin-source env:VAR|file:PATH] [--init-args STRING]
                                  [--fips-entry] [--json]

Checks, against the token, what smartcert needs of its backend HSM:
  R1  token found, user login, read-write sessions, a pool of 4 used at once
  R2  token AES-256 key with a label: generate, find by label, destroy
  R3  token generic secret (32 bytes) and CKM_SHA256_HMAC (known answer when
      the token takes a key of known value; FIPS tokens do not: SKIP)
  R4  session P-256, P-384, RSA-2048, RSA-3072 key pairs wrapped with RFC 5649
      under the token AES key; the mechanism that is RFC 5649 is found and named
      (CKM_AES_KEY_WRAP_KWP 0x210B, or CKM_AES_KEY_WRAP_PAD 0x210A on SoftHSMv2)
  R5  each blob unwrapped (SENSITIVE, not EXTRACTABLE), a signature verified
      with OpenSSL; names the extra EC attribute the module needs, if any
  R6  an unwrapped non-extractable key cannot be wrapped out again, its
      private value cannot be read (required: smartcert's key custody rests on it)
  R7  token CA key pairs P-256 and RSA-2048 sign
  R8  informational: session copies of token keys, unwrap+sign rate
  R9  a token object created by one process is found by another one

Options:
  --module PATH       the vendor's PKCS#11 library (.so)
  --token-label L     the token (default: the first one that needs a login)
  --slot N            or the token in slot N
  --pin-source SRC    the user PIN: env:VAR (an environment variable) or
                      file:PATH (first line of a file); never on the command line
  --init-args STRING  passed as CK_C_INITIALIZE_ARGS.pReserved (NSS softoken:
                      "configdir='sql:/path/to/db'")
  --fips-entry        enter through FC_GetFunctionList (NSS softoken FIPS mode)
  --json              one JSON document instead of lines

Every object created is labelled smartcert-qualify-* and destroyed before the
exit.  Use a token (or partition) set aside for the test: the checks create
and destroy keys on it.

Examples:
  SC_PIN=... scripts/qualify-backend.sh --module /usr/safenet/lunaclient/lib/libCryptoki2_64.so \
      --token-label smartcert --pin-source env:SC_PIN
  scripts/qualify-backend.sh --module /usr/lib/x86_64-linux-gnu/libsoftokn3.so --fips-entry \
      --init-args "configdir='sql:/srv/nssdb'" --token-label 'NSS FIPS 140-2 Certificate DB' \
      --pin-source file:/srv/nssdb/pin

Exit: 0 qualified, 1 a required check fails, 2 usage error.
The binary is taken from $SMARTCERT_QUALIFY_BIN, else build/tests/hsm/ under
the source tree, else built with meson in a temporary directory.
USAGE
}

for a in "$@"; do
	case $a in
	-h | --help)
		usage
		exit 0
		;;
	esac
done
if [ $# -eq 0 ]; then
	usage >&2
	exit 2
fi

bin=${SMARTCERT_QUALIFY_BIN:-}
if [ -z "$bin" ]; then
	for b in "$root"/build/tests/hsm/qualify-backend "$root"/build*/tests/hsm/qualify-backend; do
		if [ -x "$b" ]; then
			bin=$b
			break
		fi
	done
fi
tmp=
cleanup() {
	if [ -n "$tmp" ]; then
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
if [ -z "$bin" ]; then
	command -v meson >/dev/null || {
		echo "qualify-backend: not built and meson is not installed (scripts/install-deps.sh)" >&2
		exit 2
	}
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/smartcert-qualify-build-XXXXXX")
	echo "qualify-backend: building in $tmp ..." >&2
	meson setup "$tmp" "$root" >"$tmp.log" 2>&1 &&
		ninja -C "$tmp" -j2 tests/hsm/qualify-backend >>"$tmp.log" 2>&1 || {
		tail -30 "$tmp.log" >&2
		rm -f "$tmp.log"
		echo "qualify-backend: the build failed" >&2
		exit 2
	}
	rm -f "$tmp.log"
	bin=$tmp/tests/hsm/qualify-backend
fi
# not exec: the temporary build is removed on the way out
set +e
"$bin" "$@"
exit $?
