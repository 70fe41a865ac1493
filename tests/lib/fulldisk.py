"""A real full disk for tests: the calling test script runs again inside a
private user+mount namespace (`unshare -rm`, or `unshare -m` as root) on a
size-limited tmpfs, which a filler file then fills.  The mount dies with the
namespace.  Tests that cannot get a namespace or a mount exit 77 (skip).

    MNT = fulldisk.enter("48m")          # returns inside the namespace
    from scfixture import Deployment     # deployments now land on MNT
    fulldisk.fill(MNT, 16 * 1024)        # leave 16 KiB
    fulldisk.set_free(MNT, 64 * 1024)    # give some back
    fulldisk.release(MNT)                # delete the filler

LMDB reuses pages freed by earlier transactions, so on a full disk a write
fails only once the store has to grow.  A long-lived reader (the OCSP
responder's or a CRL build's) stops that reuse; `Pin` holds one with
`mdb_dump` blocked on a pipe, so that every write must grow the file.
"""
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time

INNER = "SC_FULL_DISK_MNT"
F_SETPIPE_SZ = 1031


def skip(msg):
    print(f"SKIP: {msg}", file=sys.stderr)
    sys.exit(77)


def _fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def _outer(script):
    """Make a directory on the real file system, run `script` again in a new
    mount namespace, remove the directory afterwards; exits with its code."""
    if shutil.which("unshare") is None:
        skip("unshare (util-linux) is not installed")
    if shutil.which("mdb_dump") is None or shutil.which("mdb_stat") is None:
        skip("mdb_dump/mdb_stat (lmdb-utils) are not installed")
    prefix = None
    for p in (["unshare", "-rm"], ["unshare", "-m"]):
        if p == ["unshare", "-m"] and os.geteuid() != 0:
            continue
        if subprocess.run(p + ["true"], capture_output=True).returncode == 0:
            prefix = p
            break
    if prefix is None:
        skip("cannot create a user+mount namespace here (unshare -rm refused)")
    base = os.path.join(os.environ.get("SMARTCERT_BUILDDIR", os.getcwd()), "test-tmp")
    os.makedirs(base, exist_ok=True)
    top = tempfile.mkdtemp(prefix="sc-full-disk-", dir=base)
    mnt = os.path.join(top, "test-tmp")
    os.mkdir(mnt)
    env = dict(os.environ)
    env[INNER] = mnt
    env["SMARTCERT_BUILDDIR"] = top     # scfixture puts deployments in top/test-tmp
    try:
        # the mount is private to the namespace and ends with it
        r = subprocess.run(prefix + [sys.executable, os.path.abspath(script)], env=env)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    sys.exit(r.returncode)


def enter(size):
    """Outside the namespace: run the calling script inside one and exit
    with its code.  Inside: mount a tmpfs of `size` (e.g. "48m") where
    scfixture makes its deployments, and return its path."""
    if os.environ.get(INNER) is None:
        _outer(sys.argv[0])
    mnt = os.environ[INNER]
    # huge=never: the space is counted, and given back, in 4 KiB pages
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700,huge=never",
                       "tmpfs", mnt], capture_output=True).returncode != 0:
        skip(f"cannot mount a {size} tmpfs in the mount namespace")
    if os.statvfs(mnt).f_frsize != 4096:
        skip(f"the tmpfs counts space in blocks of {os.statvfs(mnt).f_frsize} bytes, not 4 KiB")
    return mnt


def leave(mnt):
    """Unmount (the namespace would anyway); True if it is gone."""
    subprocess.run(["umount", mnt], capture_output=True)
    return not os.path.ismount(mnt)


def filler(mnt):
    return os.path.join(mnt, "filler")


def free_bytes(mnt):
    st = os.statvfs(mnt)
    return st.f_bavail * st.f_frsize


def fill(mnt, leave_bytes):
    """Fill the file system with the filler, then give back `leave_bytes`."""
    fd = os.open(filler(mnt), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 20, 4096):
            block = b"\0" * chunk
            while True:
                try:
                    if os.write(fd, block) < chunk:
                        break
                except OSError as e:
                    if e.errno != 28:
                        raise
                    break
    finally:
        os.close(fd)
    set_free(mnt, leave_bytes)


def set_free(mnt, target):
    """Resize the filler so that `target` bytes (a multiple of 4 KiB) are free."""
    path = filler(mnt)
    size = os.path.getsize(path)
    want = -(-size // 4096) * 4096 + free_bytes(mnt) - target
    if want < 0:
        _fail(f"cannot leave {target} bytes free: the filler is only {size} bytes")
    if want > size:
        with open(path, "ab") as f:
            f.write(b"\0" * (want - size))
    else:
        os.truncate(path, want)
    if free_bytes(mnt) != target:
        _fail(f"wanted {target} bytes free, have {free_bytes(mnt)}")


def release(mnt):
    """Delete the filler."""
    os.unlink(filler(mnt))


class Pin:
    """An LMDB reader holding one snapshot: mdb_dump writing into a 4 KiB
    pipe nobody reads, so it blocks inside its read transaction."""

    def __init__(self, store):
        rfd, wfd = os.pipe()
        fcntl.fcntl(wfd, F_SETPIPE_SZ, 4096)
        self.rfd = rfd
        self.p = subprocess.Popen(["mdb_dump", "-a", store], stdout=wfd,
                                  stderr=subprocess.DEVNULL)
        os.close(wfd)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = subprocess.run(["mdb_stat", "-r", store], capture_output=True, text=True)
            # a row "pid thread txnid" with a transaction open ("-" when none)
            if self.p.poll() is None and any(
                    len(ln.split()) == 3 and ln.split()[0] == str(self.p.pid) and
                    ln.split()[2] != "-" for ln in r.stdout.splitlines()):
                break
            if self.p.poll() is not None:
                _fail("mdb_dump finished instead of holding its snapshot")
            time.sleep(0.05)
        else:
            _fail("mdb_dump never showed up in the store's reader table")
        print(f"# reader snapshot held by mdb_dump pid {self.p.pid}")

    def release(self):
        """Let mdb_dump finish (its reader slot is then freed; a killed
        reader's slot would keep blocking page reuse in long-lived
        processes until some process cleans the reader table)."""
        while os.read(self.rfd, 1 << 16):
            pass
        self.p.wait()
        os.close(self.rfd)
