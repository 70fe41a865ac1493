#!/usr/bin/env bash
# qualify-backend against a real token, in a temporary directory of its own:
#   test_qualify_backend.sh softhsm   a fresh SoftHSMv2 token: exit 0, every required check PASS
#   test_qualify_backend.sh nss       a fresh NSS database through FC_GetFunctionList: exit 1,
#                                     R6 fails (and only R6 of the required checks)
# Exit 77 (skip) when the backend is not installed.
set -u
mode=${1:?usage: test_qualify_backend.sh softhsm|nss}
bin=${SMARTCERT_QUALIFY_BIN:?SMARTCERT_QUALIFY_BIN is not set (run through meson test)}
base=${SMARTCERT_BUILDDIR:-.}/tests/hsm
mkdir -p "$base"
dir=$(mktemp -d "$base/tmp-qualify-$mode-XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
umask 077
out=$dir/out.txt

case $mode in
softhsm)
	module=${SMARTCERT_SOFTHSM_MODULE:-}
	if [ -z "$module" ] || [ ! -r "$module" ] || ! command -v softhsm2-util >/dev/null; then
		echo "SKIP: SoftHSMv2 is not installed"
		exit 77
	fi
	mkdir "$dir/tokens"
	printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
		"$dir/tokens" >"$dir/softhsm2.conf"
	export SOFTHSM2_CONF=$dir/softhsm2.conf
	softhsm2-util --init-token --free --label qualify --so-pin 'qualify-so-1234' \
		--pin 'qualify-user-1234' >/dev/null || exit 1
	printf 'qualify-user-1234\n' >"$dir/user.pin"
	"$bin" --module "$module" --token-label qualify --pin-source "file:$dir/user.pin" >"$out" 2>&1
	rc=$?
	cat "$out"
	[ "$rc" -eq 0 ] || { echo "FAILED: exit $rc, expected 0"; exit 1; }
	if grep -v '\[informational\]' "$out" | grep -q '^FAIL '; then
		echo "FAILED: a required check fails"
		exit 1
	fi
	for r in R1 R2 R3 R4 R5 R6 R7 R9; do
		grep -q "^PASS $r[ .]" "$out" || { echo "FAILED: no PASS line for $r"; exit 1; }
	done
	# JSON form: one document, qualified
	"$bin" --module "$module" --token-label qualify --pin-source "file:$dir/user.pin" --json \
		>"$dir/out.json" 2>&1 || { cat "$dir/out.json"; echo "FAILED: --json exit $?"; exit 1; }
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["qualified"] and d["rfc5649_mechanism"] else 1)' \
		"$dir/out.json" || { cat "$dir/out.json"; echo "FAILED: --json"; exit 1; }
	# nothing left behind on the token
	left=$(pkcs11-tool --module "$module" --token-label qualify --login --pin 'qualify-user-1234' \
		--list-objects 2>/dev/null | grep -c 'smartcert-qualify-' || true)
	if command -v pkcs11-tool >/dev/null && [ "$left" != 0 ]; then
		echo "FAILED: $left smartcert-qualify-* objects left on the token"
		exit 1
	fi
	echo "ok: SoftHSMv2 qualifies"
	;;
nss)
	module=
	for p in /usr/lib/x86_64-linux-gnu/nss/libsoftokn3.so /usr/lib/x86_64-linux-gnu/libsoftokn3.so \
		"/usr/lib/$(gcc -print-multiarch 2>/dev/null)/nss/libsoftokn3.so" \
		"/usr/lib/$(gcc -print-multiarch 2>/dev/null)/libsoftokn3.so" \
		/usr/lib64/libsoftokn3.so /usr/lib/libsoftokn3.so; do
		if [ -r "$p" ]; then module=$p; break; fi
	done
	if [ -z "$module" ] || ! command -v certutil >/dev/null; then
		echo "SKIP: NSS softoken or certutil is not installed (libnss3 libnss3-tools)"
		exit 77
	fi
	# FIPS PIN rules: at least 7 characters of 3 classes
	printf 'Qualify-Nss-1234\n' >"$dir/pwfile"
	mkdir "$dir/db"
	certutil -N -d "sql:$dir/db" -f "$dir/pwfile" >/dev/null || exit 1
	"$bin" --module "$module" --fips-entry \
		--init-args "configdir='sql:$dir/db' certPrefix='' keyPrefix='' secmod='secmod.db' flags=optimizeSpace" \
		--token-label 'NSS FIPS 140-2 Certificate DB' --pin-source "file:$dir/pwfile" >"$out" 2>&1
	rc=$?
	cat "$out"
	[ "$rc" -eq 1 ] || { echo "FAILED: exit $rc, expected 1"; exit 1; }
	grep -q '^FAIL R6\.wrap ' "$out" || { echo "FAILED: no 'FAIL R6.wrap' line"; exit 1; }
	if grep -v '\[informational\]' "$out" | grep '^FAIL ' | grep -qv '^FAIL R6\.wrap '; then
		echo "FAILED: a required check other than R6.wrap fails"
		exit 1
	fi
	echo "ok: NSS softoken is refused for R6 alone"
	;;
*)
	echo "unknown mode $mode" >&2
	exit 2
	;;
esac
