"""`preload run`: the entrypoint wrapper.

It owns the channel's listening sockets, starts the daemon and the tracer, runs the application
with the attachment its binary needs (the hook for dynamic programs, the tracer for static and Go
ones), and does what tini does as PID 1: forwards signals, reaps orphans, exits with the
application's status (128+N when killed by signal N). The sockets are bound before the
application starts and held here, so no record and no request to the tracer is lost while a
helper starts or restarts: connections wait in the backlog."""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from preload import state

FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGTERM, signal.SIGWINCH)
DAEMON_STOP_SECONDS = 10  # the daemon drains for at most 3 s; this is only a backstop
HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libpreload.so")
MUSL_HOOK = os.path.join(os.path.dirname(HOOK), "libpreload-musl.so")  # for programs linked against musl
LD_SO_PRELOAD = "/etc/ld.so.preload"
TRACER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "preload-trace")
LISTEN_FD = 62  # the hook's PL_LISTEN_FD
TRACER_STOP_SECONDS = 2  # for the last records of traced processes; orphans may trace on after us
# the agent's own variables: the helpers must never carry the hook
AGENT_ENV = ("LD_PRELOAD", "PRELOAD_SOCKET", "PRELOAD_TRACE")
DAEMON_ENV = {"LOGURU_LEVEL": "WARNING", "LOGURU_FORMAT": "preload-daemon: <level>{message}</level>",
                  # glibc's malloc would hand the daemon's batch memory back to the kernel after
                  # every round and fault it in again: a minor fault or two per record
                  "MALLOC_TRIM_THRESHOLD_": "268435456", "MALLOC_TOP_PAD_": "16777216"}


def warn(message):
    """The wrapper's few words to the user, on stderr (the container's log stream)."""
    print(f"preload: warning: {message}", file=sys.stderr, flush=True)


class CommandError(Exception):
    """The application cannot be started; .status is the shell's code for it (127, 126)."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def resolve_command(name, path=None):
    """What execvp would run, or CommandError with the shell's exit status."""
    if "/" in name:
        found = name
        if not os.path.exists(found):
            raise CommandError(f"{name}: no such file or directory", 127)
    else:
        found = shutil.which(name, mode=os.F_OK, path=path)
        if found is None:
            raise CommandError(f"{name}: command not found", 127)
    if os.path.isdir(found) or not os.access(found, os.X_OK):
        raise CommandError(f"{name}: permission denied (not an executable file)", 126)
    return found


def _preload_list(text):
    """The libraries a LD_PRELOAD value or /etc/ld.so.preload names (the loader splits at spaces and
    colons)."""
    return text.replace(":", " ").split()


def hooked_env(base, sock, trace_sock=None, hook=HOOK):
    """The application's environment: the hook's build `hook` first in LD_PRELOAD (None: it starts
    traced, or there is no build for its libc), where to send records, and where the tracer listens
    (when there is one)."""
    env = dict(base)
    preloads = [p for p in _preload_list(env.get("LD_PRELOAD", "")) if p not in (HOOK, MUSL_HOOK)]
    if hook:
        preloads.insert(0, hook)
    if preloads:
        env["LD_PRELOAD"] = " ".join(preloads)
    else:
        env.pop("LD_PRELOAD", None)
    env["PRELOAD_SOCKET"] = str(sock)
    if trace_sock:
        env["PRELOAD_TRACE"] = str(trace_sock)
    else:
        env.pop("PRELOAD_TRACE", None)
    return env


def elf_kind(exe):
    """preload_elf_kind of what exec'ing exe runs (a script's interpreter), as the hook decides."""
    from preload._native import ffi, lib

    interp = ffi.new("char[]", 4096)
    kind = lib.preload_elf_kind(-100, os.fsencode(exe), interp, 4096)  # -100: AT_FDCWD
    if kind == lib.PRELOAD_ELF_SCRIPT:
        kind = lib.preload_elf_kind(-100, ffi.string(interp), ffi.NULL, 0)
    return kind & ~lib.PRELOAD_ELF_SECURE


def tracer_needed(kind):
    """True for a kind of program the hook cannot enter (static, Go, and 32-bit: the tracer lets
    its calls through unseen and follows the programs it starts)."""
    from preload._native import lib

    return kind in (lib.PRELOAD_ELF_STATIC, lib.PRELOAD_ELF_GO, lib.PRELOAD_ELF_FOREIGN)


def needs_tracer(exe):
    """True for a program the hook cannot enter, decided as the hook decides at exec."""
    return tracer_needed(elf_kind(exe))


def hook_for(kind):
    """The hook's build for a kind of program's libc (musl's or glibc's); None when that one was not
    built, or when none fits (a program for another machine or word size)."""
    from preload._native import lib

    if kind == lib.PRELOAD_ELF_FOREIGN:
        return None
    hook = MUSL_HOOK if kind == lib.PRELOAD_ELF_MUSL else HOOK
    return hook if os.path.exists(hook) else None


class InstallError(Exception):
    """The hook cannot be put in /etc/ld.so.preload; the message says why."""


def _check_loads(hook):
    """The image's own loader must take the hook without a word: a library it refuses (an older
    glibc than the hook needs) in /etc/ld.so.preload would break every program of the image."""
    probe = next((p for p in ("/bin/true", "/usr/bin/true", "/bin/sh") if os.path.exists(p)), None)
    if probe is None:
        return  # no dynamic program to break
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": hook}
    r = subprocess.run([probe], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    if r.returncode != 0 or r.stderr:
        said = r.stderr.decode(errors="replace").strip() or f"exit status {r.returncode}"
        raise InstallError(f"this image's loader does not load {hook}: {said}")


def install_ld_so_preload(path=LD_SO_PRELOAD, hook=HOOK):
    """Names the hook (first) in the loader's list of libraries for every glibc program, keeping the
    entries already there. Returns False when it was there already. For image builds, as root."""
    if os.geteuid() != 0:
        raise InstallError(f"{path} can only be changed by root: run this as root at image build "
                           "(before USER)")
    _check_loads(hook)
    try:
        with open(path, "a+") as f:  # in place: the file may be a mount point
            f.seek(0)
            text = f.read()
            if hook in _preload_list(text):
                return False
            f.seek(0)
            f.truncate()
            f.write(f"{hook}\n{text}")
    except OSError as e:
        raise InstallError(f"cannot write {path}: {e.strerror}") from None
    return True


def daemon_env(base):
    env = {k: v for k, v in base.items() if k not in AGENT_ENV}
    for k, v in DAEMON_ENV.items():
        env.setdefault(k, v)
    return env


class Supervisor:
    def __init__(self, argv, st, attach="auto", profile="default", rules=None, alerts_stderr=True,
                 webhook=None):
        self.argv = argv
        self.state = st
        self.attach = attach
        self.profile = profile
        self.rules = rules  # rule files (None: the packaged ruleset; False: no rules)
        self.alerts_stderr = alerts_stderr
        self.webhook = webhook
        self.listener = None
        self.daemon = None
        self.tracer = None
        self.trace_listener = None
        self.child = None
        self._early_signals = []
        self.daemon_restarts = 0
        self.tracer_restarts = 0

    # -- daemon ------------------------------------------------------------------------------

    def _start_daemon(self, gap=None, previous_status=None):
        fd = self.listener.fileno()
        config = {"listen_fd": fd, "control_fd": self.control_r, "events_path": str(self.state.events),
                  "spool_dir": str(self.state.spool), "restart_gap": gap, "previous_status": previous_status,
                  "rules": self.rules, "alerts_path": str(self.state.alerts),
                  "alerts_stderr": self.alerts_stderr, "webhook": self.webhook}
        # -P: the application's cwd may hold anything, even a directory named preload
        cmd = [sys.executable, "-P", "-m", "preload.daemon", json.dumps(config)]
        # own session: a terminal's ^C is for the application; the daemon stops when we say so
        self.daemon = subprocess.Popen(cmd, pass_fds=(fd, self.control_r), env=daemon_env(os.environ),
                                       stdin=subprocess.DEVNULL, start_new_session=True)

    def _daemon_exited(self, status):
        code = _exit_code(status)
        self.daemon = None
        if self.child is None:  # we are shutting down: expected
            return
        died_at = time.monotonic()
        warn(f"the daemon exited with status {code}; restarting it (records wait in the channel)")
        self.daemon_restarts += 1
        # a daemon that cannot start at all must not spin: back off after repeated deaths
        time.sleep(min(0.1 * 2 ** min(self.daemon_restarts - 1, 5), 3.0))
        self._start_daemon(gap=time.monotonic() - died_at, previous_status=code)

    def _stop_daemon(self):
        """Closing the control pipe tells the daemon to drain and stop. Unlike a signal, it cannot
        arrive before the daemon is ready for it, and it also comes if we die."""
        os.close(self.control_w)
        if self.daemon is None:
            return
        if not _exits_within(self.daemon.pid, DAEMON_STOP_SECONDS):
            warn(f"the daemon did not stop in {DAEMON_STOP_SECONDS} s; killing it")
            self.daemon.kill()
        self.daemon.wait()

    # -- tracer ---------------------------------------------------------------------------------

    def _start_tracer(self):
        fd = self.trace_listener.fileno()
        cmd = [TRACER, "serve", "--listen-fd", str(fd), "--control-fd", str(self.trace_control_r),
               "--socket", str(self.state.socket), "--profile", self.profile]
        self.tracer = subprocess.Popen(cmd, pass_fds=(fd, self.trace_control_r), env=daemon_env(os.environ),
                                       stdin=subprocess.DEVNULL, start_new_session=True)

    def _open_tracer(self):
        """The tracer's socket and the tracer; False when this system cannot have one."""
        if not os.access(TRACER, os.X_OK):
            warn(f"{TRACER} is missing: static and Go programs will not be observed")
            return False
        self.trace_listener = _listen(self.state.trace_socket)
        self.trace_control_r, self.trace_control_w = os.pipe()
        self._start_tracer()
        return True

    def _tracer_died(self, code, restart):
        what = "restarting it" if restart else "the application had ended with it"
        warn(f"the tracer exited with status {code}; {what} (traced processes end with it)")
        self._log_event("preload.tracer", **{"preload.state": "restart" if restart else "died",
                                             "preload.previous_status": code})

    def _log_event(self, evt_type, **fields):
        """An event of the wrapper's own in the event log (lines are appended whole: the daemon
        writes the same file)."""
        from preload import events
        from preload.daemon import EventLog

        log = EventLog(self.state.events)
        log.add(events.agent_event(evt_type, **fields))
        log.close()

    def _tracer_exited(self, status):
        """Its tracees died with it (EXITKILL): nothing runs on with a filter and no tracer. The
        next programs get a new one; the ones in between are recorded blind by the launcher."""
        code = _exit_code(status)
        self.tracer = None
        if self.child is None:  # stopping: _stop_tracer reports it
            return
        self._tracer_died(code, restart=True)
        self.tracer_restarts += 1
        time.sleep(min(0.1 * 2 ** min(self.tracer_restarts - 1, 5), 3.0))
        self._start_tracer()

    def _stop_tracer(self):
        """End of file on its control pipe: it leaves once no traced process is left (its last
        records then are in the channel before the daemon drains)."""
        if self.trace_listener is None:
            return
        os.close(self.trace_control_w)
        if self.tracer is not None and _exits_within(self.tracer.pid, TRACER_STOP_SECONDS):
            # it may have died before the application, which the kernel then killed with it,
            # and the application's end was reaped first
            rc = self.tracer.wait()  # Popen's convention: -N when killed by signal N
            if rc != 0:
                self._tracer_died(128 - rc if rc < 0 else rc, restart=False)
        self.trace_listener.close()
        try:
            self.state.trace_socket.unlink()
        except OSError:
            pass

    # -- application ----------------------------------------------------------------------------

    def _forward(self, signum, frame):
        if self.child is None:  # not started yet, or its pid not recorded yet: it gets it then
            self._early_signals.append(signum)
            return
        try:
            os.kill(self.child, signum)
        except ProcessLookupError:
            pass

    def _started(self, pid):
        """From now on signals go straight to the application; those that came before follow."""
        self.child = pid
        early, self._early_signals = self._early_signals, []
        for signum in early:
            self._forward(signum, None)

    def run(self):
        exe = resolve_command(self.argv[0], os.environ.get("PATH"))
        self.state.prepare()
        if any(self.state.spool.iterdir()):
            from preload.daemon import close_previous_run
            close_previous_run(self.state.spool, self.state.previous_events)
        sock = self.state.socket
        # at the fd number by which the hook knows the daemon, which must not report to itself
        self.listener = _listen(sock, at_fd=LISTEN_FD)
        self.control_r, self.control_w = os.pipe()
        self._start_daemon()
        tracing = self.attach in ("auto", "ptrace") and self._open_tracer()
        try:
            link = state.link_daemon(sock)  # for processes that `preload run` does not start
        except state.StateError as e:
            link = None
            warn(str(e))

        from preload._native import lib
        lib.preload_set_subreaper()  # orphans of the application come to us to be reaped
        for s in FORWARDED:
            signal.signal(s, self._forward)
        argv, program = self.argv, exe
        kind = elf_kind(exe)
        traced = tracing and (self.attach == "ptrace" or tracer_needed(kind))
        hook = None if traced or self.attach == "none" else hook_for(kind)
        if self.attach == "none":
            env = os.environ
        else:
            env = hooked_env(os.environ, sock, self.state.trace_socket if tracing else None, hook=hook)
        if traced:  # the launcher has the tracer seize it, then execs the program in its place
            # (--handoff: its start is the first record, as for a hooked program)
            argv, program = [TRACER, "exec", "--handoff", exe, *self.argv], TRACER
        try:
            # its own process group, as tini does: a terminal's ^C reaches it once, not twice
            proc = subprocess.Popen(argv, executable=program, env=env, close_fds=False,
                                    restore_signals=True, process_group=0)
        except OSError as e:
            raise CommandError(f"{self.argv[0]}: {e.strerror}", 126 if e.errno == 13 else 127) from None
        self._started(proc.pid)
        _give_terminal(proc.pid)
        # a program that needs the tracer, with none in use: described beside the application, not
        # before it (classifying it in full costs tens of milliseconds)
        note = None
        if not tracing and self.attach != "none" and tracer_needed(kind):
            note = threading.Thread(target=self._note_blind_spot, args=(exe,), daemon=True)
            note.start()
        if not traced and hook is None and self.attach != "none" and kind == lib.PRELOAD_ELF_MUSL:
            self._note_no_build(exe)
        status = self._wait_for(proc.pid)
        self.child = None
        if note is not None:
            note.join()
        self._stop_tracer()
        state.unlink_daemon(link, sock)
        self._stop_daemon()
        self.listener.close()
        try:
            sock.unlink()
        except OSError:
            pass
        return _exit_code(status)

    def _wait_for(self, pid):
        """Reaps everything; returns the application's wait status."""
        while True:
            try:
                reaped, status = os.waitpid(-1, 0)
            except ChildProcessError:  # cannot happen while the application runs; be safe
                return 0
            if reaped == pid:
                return status
            if self.daemon is not None and reaped == self.daemon.pid:
                self.daemon.returncode = _exit_code(status)
                self._daemon_exited(status)
            elif self.tracer is not None and reaped == self.tracer.pid:
                self.tracer.returncode = _exit_code(status)
                self._tracer_exited(status)

    def _note_no_build(self, exe):
        self._blind(exe, "dynamic-musl", "linked against musl, and the hook's musl build "
                    "(libpreload-musl.so) is not installed; its activity is not observed")

    def _note_blind_spot(self, exe):
        from preload import elf

        target = elf.classify(exe)
        self._blind(exe, target.kind, f"{target.kind} program: libc hooks cannot see inside it and the "
                    f"tracer is not in use (--attach {self.attach}); its activity is not observed")

    def _blind(self, exe, binary, reason):
        warn(f"{exe}: {reason}")
        self._log_event("preload.blindspot", **{"evt.arg.filename": exe, "preload.binary": binary,
                                                "preload.reason": reason, "proc.pid": os.getpid()})


def _listen(path, at_fd=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if path.exists() or path.is_symlink():
        path.unlink()
    s.bind(str(path))
    os.chmod(path, 0o666)  # children that drop privileges report too
    s.listen(4096)
    if at_fd is not None:
        os.dup2(s.fileno(), at_fd, inheritable=False)
        s.close()
        s = socket.socket(fileno=at_fd)
    return s


def _exits_within(pid, seconds):
    """Waits for a child's exit without reaping it, and without polling (a pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone already, or a kernel without pidfds
        return True
    try:
        return bool(select.select([fd], [], [], seconds)[0])
    finally:
        os.close(fd)


def _give_terminal(pgid):
    """Makes the application's group the terminal's foreground, when there is a terminal."""
    try:
        if not os.isatty(0):
            return
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(0, pgid)
        finally:
            signal.signal(signal.SIGTTOU, old)
    except OSError:
        pass


def _exit_code(status):
    """Shell convention: the exit code, or 128+N for a process killed by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def run(argv, state_dir=None, attach="auto", profile="default", rules=None, alerts_stderr=True,
        webhook=None):
    st = state.State(state_dir or state.default_dir())
    return Supervisor(argv, st, attach, profile, rules, alerts_stderr, webhook).run()
