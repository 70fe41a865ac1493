#!/usr/bin/env bash
# The dependency check (scripts/check-deps.sh) checked itself: each case runs
# it with a fixture object in place of the PKCS#11 module and says what it
# must answer.  Usage: selftest.sh CHECKER BUILDDIR LMDB_FIXTURE ISSUER_FIXTURE CLEAN_FIXTURE
set -u
checker=$1 builddir=$2 lmdb=$3 issuer=$4 clean=$5
module=pkcs11/libsmartcert-pkcs11.so
failed=0

# expect NAME EXIT PATTERN [ENV...]: run the checker with ENV, check its exit
# status and that its output has a line matching PATTERN.
expect() {
	local name=$1 want_rc=$2 pattern=$3 out rc
	shift 3
	out=$(env "$@" bash "$checker" "$builddir" 2>&1)
	rc=$?
	if [ "$rc" != "$want_rc" ] || ! grep -Eq -- "$pattern" <<< "$out"; then
		echo "FAIL $name: exit $rc (want $want_rc), output should match '$pattern':"
		sed 's/^/    /' <<< "$out"
		failed=$((failed + 1))
	else
		echo "ok   $name"
	fi
}

# The module links LMDB: the build fails its check (the rule is on).
expect lmdb-module-caught 1 '^FAIL +module-no-lmdb$' \
	SC_DEPCHECK_BINARY="$module=$lmdb" SC_DEPCHECK_ENFORCE=
expect lmdb-module-caught-with-all 1 '^FAIL +module-no-lmdb$' \
	SC_DEPCHECK_BINARY="$module=$lmdb" SC_DEPCHECK_ENFORCE=all
expect issuer-in-module-fails 1 '^FAIL +module-no-issuer$' \
	SC_DEPCHECK_BINARY="$module=$issuer" SC_DEPCHECK_ENFORCE=
expect issuer-in-ocspd-fails 1 '^FAIL +ocspd-no-authz$' \
	SC_DEPCHECK_BINARY="tools/smartcert-ocspd=$issuer" SC_DEPCHECK_ENFORCE=
expect clean-module-passes-every-rule 0 '^ok +module-no-lmdb$' \
	SC_DEPCHECK_BINARY="$module=$clean" SC_DEPCHECK_ENFORCE=all
expect missing-binary-is-an-error 1 "^ERROR module-no-issuer: .*does not exist" \
	SC_DEPCHECK_BINARY="$module=$builddir/no-such-file.so" SC_DEPCHECK_ENFORCE=

echo "$failed failed"
[ "$failed" = 0 ]
