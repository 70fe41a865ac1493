#!/usr/bin/env bash
# Install the Debian packages smartcert needs to build, run and test.
# Safe to re-run; skips apt when everything is already there.
set -euo pipefail

packages=(
  # build
  build-essential meson ninja-build pkg-config
  # libraries
  libssl-dev liblmdb-dev libtasn1-6-dev libtasn1-bin libp11-kit-dev libmicrohttpd-dev
  libpq-dev
  # runtime: the embedded backend HSM and p11-kit
  softhsm2 p11-kit openssl lmdb-utils
  # the PostgreSQL store's tests start their own server (initdb, pg_ctl)
  postgresql
  # independent judges used by the tests
  gnutls-bin opensc python3 python3-pykcs11 python3-cryptography curl valgrind
  # a second software backend for qualify-backend (tests/hsm/test_qualify_backend.sh nss)
  libnss3 libnss3-tools
  # stock PKCS#11 consumers on deposited approvals (tests/signd/test_signd_deposit_clients.py)
  openjdk-17-jdk-headless libengine-pkcs11-openssl libgnutls28-dev
  # style checks (scripts/check-style.sh)
  clang-format
)
if [ "${SMARTCERT_BENCH_DEPS:-0}" = 1 ]; then
  packages+=(wrk apache2-utils nginx-light time)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
