#!/bin/sh
# Check a smartcert checkpoint log offline, with the openssl CLI and POSIX
# tools only (docs/evidence.md):
#   scripts/verify-checkpoints.sh checkpoints.log checkpoint-signer.pem
# Every line's signature must verify with the public key, and every line must
# name the SHA-256 of the line before it (64 zeros for the first).  Prints the
# newest checkpoint and exits 0, or names the first bad line and exits 8.
set -u
log=${1:?usage: verify-checkpoints.sh LOG PUBKEY.pem}
pub=${2:?usage: verify-checkpoints.sh LOG PUBKEY.pem}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prev=0000000000000000000000000000000000000000000000000000000000000000
n=0
last=
while IFS= read -r line || [ -n "$line" ]; do
	n=$((n + 1))
	body=${line% sig=*}
	sig=${line##* sig=}
	printf '%s' "$body" > "$tmp/body"
	if ! printf '%s' "$sig" | openssl base64 -d -A > "$tmp/sig" 2>/dev/null ||
	   ! openssl dgst -sha256 -verify "$pub" -signature "$tmp/sig" "$tmp/body" >/dev/null 2>&1; then
		echo "line $n: the signature does not verify" >&2
		exit 8
	fi
	case "$body" in
	*" prev=$prev"*) ;;
	*) echo "line $n: does not follow line $((n - 1)) (prev is not its SHA-256)" >&2; exit 8 ;;
	esac
	prev=$(printf '%s' "$line" | openssl dgst -sha256 -r | cut -d' ' -f1)
	last=$body
done < "$log"
[ "$n" -gt 0 ] || { echo "no checkpoint in $log" >&2; exit 8; }
echo "$n checkpoints verify; the newest: ${last#smartcert-checkpoint v1 }"
