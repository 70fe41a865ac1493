#!/usr/bin/env bash
# Build from scratch and run every test: once as a normal build with
# warnings as errors, once under AddressSanitizer + UndefinedBehaviorSanitizer,
# once under ThreadSanitizer (any data race or lock-order report fails the
# test that produced it).
# Ends with the line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

out=${SMARTCERT_TEST_BUILDDIR:-build-test}
rm -rf "$out" "$out-asan" "$out-tsan"

jobs=$(nproc)
meson setup "$out" --werror -Dbuildtype=debugoptimized -Dtest_hooks=true >/dev/null
ninja -C "$out" -j "$jobs" >/dev/null

meson setup "$out-asan" --werror -Dbuildtype=debug -Dtest_hooks=true -Db_sanitize=address,undefined \
  -Db_lundef=false >/dev/null
ninja -C "$out-asan" -j "$jobs" >/dev/null

meson setup "$out-tsan" --werror -Dbuildtype=debug -Dtest_hooks=true -Db_sanitize=thread \
  -Db_lundef=false >/dev/null
ninja -C "$out-tsan" -j "$jobs" >/dev/null

status=0
meson test -C "$out" --print-errorlogs --num-processes "$jobs" || status=1
# Under the sanitizers: every suite whose processes are all built here (the
# PKCS#11 tests that load the module into Debian's python are left to the
# plain run, since an instrumented module cannot load into an
# uninstrumented interpreter), except the style and link-dependency checks,
# which read the sources and the build's link lists and so answer the same
# in every build.  ThreadSanitizer also skips the tests whose processes
# start no thread (suite no-threads).
meson test -C "$out-asan" --print-errorlogs --num-processes "$jobs" \
  --no-suite pkcs11-python --no-suite style --no-suite deps || status=1
meson test -C "$out-tsan" --print-errorlogs --num-processes "$jobs" \
  --no-suite pkcs11-python --no-suite valgrind --no-suite style --no-suite deps \
  --no-suite no-threads || status=1

python3 - "$out" "$out-asan" "$out-tsan" <<'PY'
import json, sys
passed = failed = skipped = 0
for d in sys.argv[1:]:
    try:
        lines = open(f"{d}/meson-logs/testlog.json").read().splitlines()
    except OSError:
        continue
    for line in lines:
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
