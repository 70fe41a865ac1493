#!/usr/bin/env bash
# What each built binary may carry: fails when one links something its rule
# forbids (a symbol from `nm`, static or dynamic, or a DT_NEEDED library from
# `readelf -d`).  Run by `meson test -C BUILD deps-check`; by hand:
#
#   scripts/check-deps.sh BUILDDIR
#
# Rules are the table below, one line each:
#
#   id | binary (relative to BUILDDIR) | state | what is forbidden | why
#
# (fields are separated by " | ", a bar with a space either side, so a
# regex may use "|" for alternation)
#
#   what is forbidden:  sym:ERE   a symbol name matching the extended regex
#                       lib:ERE   a needed shared library matching it
#   state:  on       enforced: a match fails the check
#           pending  a goal not met yet: a match is reported ("pending") and
#                    does not fail, unless the rule is switched on with
#                    SC_DEPCHECK_ENFORCE=id[,id...] (or "all"); a pending
#                    rule that already holds says so, so it can be set to on
#           future   for a binary not built yet: enforced once it exists,
#                    reported as "not built" until then
# A rule id may have several lines (one per pattern).  A binary a rule names
# that does not exist is an error for "on" and "pending" rules.
#
# SC_DEPCHECK_BINARY=target=path (several separated by spaces) checks `path`
# in place of `target`: the self-test (tests/deps) uses it to show that a
# rule fails on a deliberately wrong object.
set -u

RULES='
ocspd-no-provisioning | tools/smartcert-ocspd | on | sym:^sc_hsm_(init_token|create_master_keys|generate_token_key|generate_wrapped)$ | the OCSP responder creates no keys
ocspd-no-master-key | tools/smartcert-ocspd | on | sym:^(sc_hsm_unwrap|sc_hsm_mac|hsm_need_master|sc_keybind_[a-z_]+)$ | its only key is the OCSP signer token key
ocspd-no-authz | tools/smartcert-ocspd | on | sym:^sc_authz_ | the responder has nothing to do with authorisation tokens
ocspd-no-authz | tools/smartcert-ocspd | on | lib:^libtasn1 | (the token decoder library)
module-no-issuer | pkcs11/libsmartcert-pkcs11.so | on | sym:^sc_authz_(issue|encode|write_uint)$ | a gateway never mints tokens
module-no-provisioning | pkcs11/libsmartcert-pkcs11.so | on | sym:^sc_hsm_(init_token|create_master_keys|generate_token_key|generate_wrapped)$ | a gateway creates no keys
module-no-lmdb | pkcs11/libsmartcert-pkcs11.so | on | sym:^mdb_ | a gateway has no store access (DESIGN, trust boundaries)
module-no-lmdb | pkcs11/libsmartcert-pkcs11.so | on | lib:^liblmdb | (the LMDB library)
module-no-hsm | pkcs11/libsmartcert-pkcs11.so | on | sym:^(sc_hsm_|hsm_) | a gateway holds no backend PIN and no key
module-no-hsm | pkcs11/libsmartcert-pkcs11.so | on | lib:^libp11-kit | (the backend is loaded through p11-kit)
module-no-store | pkcs11/libsmartcert-pkcs11.so | on | sym:^(sc_store_|sc_txn_|sc_deploy_|sc_audit_) | a gateway opens no store and writes no record
module-no-authz | pkcs11/libsmartcert-pkcs11.so | on | sym:^sc_authz_ | tokens are checked in the signing service, not by the gateway
module-no-authz | pkcs11/libsmartcert-pkcs11.so | on | lib:^libtasn1 | (the token decoder library)
module-no-policy | pkcs11/libsmartcert-pkcs11.so | on | sym:^sd_ | the signing policy lives in the service
signd-no-provisioning | tools/smartcert-signd | on | sym:^sc_hsm_(init_token|create_master_keys|generate_token_key|generate_wrapped)$ | the signing service creates no keys
signd-no-issuer | tools/smartcert-signd | on | sym:^sc_authz_(issue|encode|write_uint)$ | the signing service verifies tokens, never mints them
'

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
	echo "usage: $0 BUILDDIR" >&2
	exit 2
fi
builddir=$1
enforce=",${SC_DEPCHECK_ENFORCE:-},"

trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; s=${s%"${s##*[![:space:]]}"}; printf '%s' "$s"; }

path_of() {
	local target=$1 pair
	for pair in ${SC_DEPCHECK_BINARY:-}; do
		if [ "${pair%%=*}" = "$target" ]; then
			printf '%s' "${pair#*=}"
			return
		fi
	done
	printf '%s' "$builddir/$target"
}

# What each file defines and needs, read once a file: load_file runs in
# this shell (never in $(...), whose assignments would not outlive it).
declare -A syms_cache libs_cache
load_file() {
	local f=$1
	if [ -z "${syms_cache[$f]+x}" ]; then
		# Static symbols too: a static library linked in leaves its
		# function names in .symtab unless the binary is stripped.
		syms_cache[$f]=$( { nm "$f" 2>/dev/null; nm -D "$f" 2>/dev/null; } |
			awk 'NF >= 2 { print $NF }' | sed 's/@.*//' | sort -u)
		libs_cache[$f]=$(readelf -d "$f" 2>/dev/null |
			sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
	fi
}
symbols() { printf '%s\n' "${syms_cache[$1]}"; }
needed() { printf '%s\n' "${libs_cache[$1]}"; }

fail=0
checked=0
declare -A rule_hit rule_state rule_file rule_seen
order=()
while IFS=$'\t' read -r id target state pat why; do
	id=$(trim "$id")
	[ -z "$id" ] && continue
	target=$(trim "$target"); state=$(trim "$state"); pat=$(trim "$pat"); why=$(trim "$why")
	if [ -z "${rule_seen[$id]+x}" ]; then
		order+=("$id")
		rule_seen[$id]=1
		rule_hit[$id]=0
	fi
	rule_state[$id]=$state
	file=$(path_of "$target")
	rule_file[$id]=$file
	if [ ! -e "$file" ]; then
		if [ "$state" = future ]; then
			rule_hit[$id]=-1
			continue
		fi
		echo "ERROR $id: $file does not exist (build first, or fix the rule)"
		fail=1
		continue
	fi
	load_file "$file"
	if [ -z "${syms_cache[$file]}" ]; then
		echo "ERROR $id: no symbols in $file (stripped?): cannot check it"
		fail=1
		continue
	fi
	case $pat in
	sym:*) found=$(symbols "$file" | grep -E -- "${pat#sym:}" | head -5 | tr '\n' ' ') ;;
	lib:*) found=$(needed "$file" | grep -E -- "${pat#lib:}" | tr '\n' ' ') ;;
	*) echo "ERROR $id: bad pattern '$pat' (sym:ERE or lib:ERE)"; fail=1; continue ;;
	esac
	checked=$((checked + 1))
	if [ -n "$found" ]; then
		rule_hit[$id]=1
		echo "  $id: $target has ${pat%%:*} $(trim "$found") -- $why"
	fi
done <<< "${RULES// | /$'\t'}"

for id in "${order[@]}"; do
	state=${rule_state[$id]}
	if [ "${rule_hit[$id]}" = -1 ]; then
		echo "not built $id (${rule_file[$id]}): checked once it exists"
		continue
	fi
	if [ "${rule_hit[$id]}" = 0 ]; then
		if [ "$state" = pending ]; then
			echo "ok      $id (pending rule already holds: set it to on)"
		else
			echo "ok      $id"
		fi
		continue
	fi
	if [ "$state" = pending ] && [[ $enforce != *",$id,"* ]] && [[ $enforce != *",all,"* ]]; then
		echo "pending $id: not met yet (SC_DEPCHECK_ENFORCE=$id makes it fail)"
		continue
	fi
	echo "FAIL    $id"
	fail=1
done
echo "$checked patterns checked, $([ $fail = 0 ] && echo 'no forbidden dependency' || echo 'FAILED')"
exit $fail
