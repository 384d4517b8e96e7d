"""The state directory: event log, channel socket, spool, lock.

Default, with no configuration: PRELOAD_STATE_DIR if set; else for root /var/lib/preload (in a
container) and for other users ~/.local/state/preload (on a laptop); /tmp/preload-UID when those are
not writable (read-only root file systems are common on managed container services)."""
import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

EVENTS = "events.jsonl"
ALERTS = "alerts.jsonl"
SOCKET = "preload.sock"
SPOOL = "spool"
TRACE_SOCKET = "trace.sock"
KEEP_OLD_LOGS = 5
_SUN_PATH_MAX = 107


def daemon_link():
    """Where processes that `preload run` did not start (`docker exec` sessions, hooked through
    /etc/ld.so.preload) find the daemon: a symbolic link to its socket in /dev/shm, which every
    container has and every user can write, named after the pid namespace (the container) that
    they share with it. None without /proc."""
    try:
        return Path(f"/dev/shm/preload-{os.stat('/proc/self/ns/pid').st_ino}.sock")
    except OSError:
        return None


def link_daemon(sock):
    """Points the link at sock (atomically: a process never sees it half made); returns the link, or
    None when there can be none (no /dev/shm: such processes then stay silent). Raises StateError
    when the name holds something that is not a link of ours (another user's link, a directory) and
    we cannot take it away: only root can in /dev/shm, which is sticky."""
    link = daemon_link()
    if link is None:
        return None
    # a name no other user can guess, and so cannot take before us
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(8)}")
    try:
        os.symlink(sock, tmp)
    except OSError:
        return None
    try:
        held = os.lstat(link)
    except OSError:
        held = None
    try:
        if held and not (stat.S_ISLNK(held.st_mode) and held.st_uid == os.geteuid()):
            if os.geteuid() != 0:
                raise PermissionError(errno.EPERM, "held by another user or not a link")
            if stat.S_ISDIR(held.st_mode):
                shutil.rmtree(link)
        os.replace(tmp, link)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot link {link} to the daemon ({e.strerror}): processes that "
                         "'preload run' does not start will not be watched") from None
    return link


def unlink_daemon(link, sock):
    """Removes the link, unless another run (in the same pid namespace) has taken it over since."""
    try:
        if link is not None and os.readlink(link) == str(sock):
            link.unlink()
    except OSError:
        pass


class StateError(Exception):
    """A state directory that cannot be used; the message says why and what to do."""


def candidates():
    env = os.environ.get("PRELOAD_STATE_DIR")
    if env:
        return [Path(env)]
    uid = os.getuid()
    if uid == 0:
        first = [Path("/var/lib/preload")]
    else:
        xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        first = [Path(xdg) / "preload"]
    return first + [Path(tempfile.gettempdir()) / f"preload-{uid}"]


def default_dir():
    """The first candidate that can be created and written."""
    tried = []
    for path in candidates():
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK | os.X_OK):
                return path
        except OSError as e:
            tried.append(f"{path}: {e.strerror}")
    raise StateError("no writable state directory (" + "; ".join(tried) + "); set PRELOAD_STATE_DIR")


def existing_dir():
    """For readers (report): the first candidate holding an event log, else the default."""
    for path in candidates():
        if (path / EVENTS).exists():
            return path
    return candidates()[0]


class State:
    """One run's view of the state directory."""

    def __init__(self, root):
        self.root = Path(root).absolute()
        self.events = self.root / EVENTS
        self.alerts = self.root / ALERTS
        self.previous_events = self.root / "events.1.jsonl"
        sock = self.root / SOCKET
        if len(os.fsencode(sock.absolute())) > _SUN_PATH_MAX:
            # unix socket paths are short; a deep state dir gets its socket in a private temp dir
            sock = Path(tempfile.mkdtemp(prefix="preload-")) / SOCKET
        self.socket = sock.absolute()
        self.spool = self.socket.parent / SPOOL  # the hook finds it beside the socket
        self.trace_socket = self.socket.parent / TRACE_SOCKET
        self._lock = None

    def prepare(self):
        """Creates the layout and takes the run lock; rotates the previous run's log away."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.spool.mkdir(parents=True, exist_ok=True)
            # processes that dropped privileges still leave their spool notes here
            os.chmod(self.spool, 0o1777)
            self._lock = open(self.root / "run.lock", "w")
        except OSError as e:
            raise StateError(f"cannot use state directory {self.root}: {e.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StateError(
                f"another 'preload run' is using {self.root}; give this one its own --state-dir"
            ) from None
        self._rotate()

    def _rotate(self):
        for stem in ("events", "alerts"):
            current = self.root / f"{stem}.jsonl"
            if not current.exists() or current.stat().st_size == 0:
                continue
            n = 1
            while (self.root / f"{stem}.{n}.jsonl").exists():
                n += 1
            for i in range(n, 1, -1):  # .1 is the newest old log
                os.replace(self.root / f"{stem}.{i - 1}.jsonl", self.root / f"{stem}.{i}.jsonl")
            os.replace(current, self.root / f"{stem}.1.jsonl")
            for old in range(KEEP_OLD_LOGS + 1, n + 1):
                (self.root / f"{stem}.{old}.jsonl").unlink(missing_ok=True)
