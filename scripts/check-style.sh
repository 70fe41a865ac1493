#!/usr/bin/env bash
# The style checks (STYLE.md habit 10), run by `meson test -C BUILD --suite style`:
#
#   scripts/check-style.sh banned [FILE...]   no banned C function is called
#   scripts/check-style.sh format [FILE...]   clang-format --dry-run --Werror
#
# Without FILEs, `banned` reads every C source and header git tracks (or,
# outside a git checkout, every *.c/*.h below the source root) except the
# style test's own bad fixtures, and `format` reads the files listed in
# scripts/style-formatted.txt: a file joins that list in a commit that
# only reformats it (`clang-format -i FILE`), so a format change never hides
# in a behaviour change.  Run from anywhere; paths are relative to the
# source root.  Exit 0 clean, 1 a finding, 77 clang-format is not installed
# (scripts/install-deps.sh installs it).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1

# Banned: unbounded copies and formats, unchecked conversions, static state.
# Use snprintf/asprintf, memcpy with a checked length, strtol/strtoull with
# an end pointer and errno, strtok_r, mkstemp.
BANNED='strcpy strcat strncat sprintf vsprintf gets atoi atol atoll atof strtok tmpnam tempnam mktemp getwd'

# Known calls waiting for their owner, as "path function"; each line is a
# debt: remove it with the call.
ALLOW='
tests/pkcs11/bench-sign.c strncat
'

sources() {
	if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git -C "$root" ls-files -- '*.c' '*.h'
	else
		find . -name '*.[ch]' -not -path './build*' | sed 's|^\./||' | sort
	fi | grep -v '^tests/style/bad-'
}

check_banned() {
	local re found=0 f line path fn
	re="\\b($(tr ' ' '|' <<< "$BANNED"))[[:space:]]*\\("
	while IFS= read -r f; do
		[ -f "$f" ] || continue
		# drop string literals, then comments (line and block, crudely)
		while IFS= read -r line; do
			path=${line%%:*}
			fn=$(grep -oE "$re" <<< "${line#*:*:}" | head -1 | sed 's/[[:space:](]*$//')
			if grep -qxF "$path $fn" <<< "$ALLOW"; then
				continue
			fi
			echo "$line"
			echo "  ^ $fn is banned here: see scripts/check-style.sh for what to use instead"
			found=1
		done < <(sed -e 's#"\([^"\\]\|\\.\)*"#""#g' -e 's|//.*||' -e 's|/\*.*\*/||g' "$f" |
			awk -v f="$f" '/\/\*/ { c = 1 } !c { print f ":" NR ":" $0 } /\*\// { c = 0 }' |
			grep -E "$re")
	done
	return $found
}

check_format() {
	local f out bad=0
	if ! command -v clang-format >/dev/null; then
		echo "SKIP: clang-format is not installed (scripts/install-deps.sh installs it)"
		return 77
	fi
	for f in "$@"; do
		if [ ! -f "$f" ]; then
			echo "$f: listed for the format check but missing"
			bad=1
			continue
		fi
		if ! out=$(clang-format --dry-run --Werror "$f" 2>&1); then
			head -20 <<< "$out"
			echo "  ^ $f is not formatted: run clang-format -i $f (in a commit of its own)"
			bad=1
		fi
	done
	return $bad
}

what=${1:-}
shift || true
case $what in
banned)
	if [ $# -gt 0 ]; then
		printf '%s\n' "$@" | check_banned
	else
		sources | check_banned
	fi
	rc=$?
	[ $rc = 0 ] && echo "no banned function called"
	exit $rc
	;;
format)
	if [ $# -eq 0 ]; then
		mapfile -t files < <(grep -v '^[[:space:]]*\(#\|$\)' scripts/style-formatted.txt)
		set -- "${files[@]}"
	fi
	check_format "$@"
	rc=$?
	[ $rc = 0 ] && echo "$# files formatted as .clang-format says"
	exit $rc
	;;
*)
	echo "usage: $0 banned|format [FILE...]" >&2
	exit 2
	;;
esac
