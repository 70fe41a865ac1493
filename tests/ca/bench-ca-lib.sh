# Shared by the CA benchmarks (bench-enrol.sh, bench-rewrap.sh); sourced,
# not run.  Environment: SMARTCERT_BIN, SMARTCERT_BUILDDIR (set by meson);
# SC_BENCH_DIR puts the work directory elsewhere (big fills); it is kept
# when SC_BENCH_KEEP=1.
SC=${SMARTCERT_BIN:?}
# Each deployment names its own token configuration.
unset SOFTHSM2_CONF

# bench_workdir NAME: a fresh $work, removed on exit.
bench_workdir() {
	local base=${SC_BENCH_DIR:-${SMARTCERT_BUILDDIR:?}}
	mkdir -p "$base"
	work=$(mktemp -d "$base/$1.XXXXXX")
	[ "${SC_BENCH_KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
}

# bench_rows CSV N KEY_TYPE: a batch-enrolment file of N users, KEY_TYPE keys.
bench_rows() {
	python3 - "$@" <<'PY'
import sys
path, n, kt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "w") as f:
    f.write("user_id,name,id_number,dob,profile,key_type\n")
    for i in range(n):
        f.write(f"{kt}-{i:07d},Bench Holder {i},{kt[0].upper()}{i:08d},,adult,{kt}\n")
PY
}
