"""The `preload` command. Commands are thin: check the input, call the library, print.

Logging is configured here, once per process, and nowhere in the library."""
import json
import os
import sys

import click

STATE_DIR = click.option(
    "--state-dir", type=click.Path(file_okay=False), envvar="PRELOAD_STATE_DIR",
    help="Where the event log and the channel live [env PRELOAD_STATE_DIR; default /var/lib/preload "
         "for root, ~/.local/state/preload otherwise, /tmp/preload-UID when those are read-only].")
FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="text for people, json for scripts.")


def _exit_now(code):
    """As PID 1 we have nothing left to tear down once the application is gone, and interpreter
    finalisation would add its milliseconds to every container's stop."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _log_to_stderr(level="WARNING", prefix="preload"):
    from loguru import logger  # here, not at the top: `preload run` start-up is the application's time

    logger.remove()
    logger.add(sys.stderr, level=level, format=prefix + ": {message}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="preload")
def main():
    """Runtime security from inside the container: no host, no kernel module, no sidecar.

    \b
    Put it in front of your application:
        ENTRYPOINT ["preload", "run", "--"]
    Then read what it saw:
        preload report
    """


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@STATE_DIR
@click.option("--attach", type=click.Choice(["auto", "preload", "ptrace", "none"]), default="auto",
              show_default=True,
              help="How to watch the application: auto decides at every exec (the libc hook for "
                   "dynamic programs, the tracer for static and Go ones); preload uses the hook only "
                   "(static programs are blind spots); ptrace traces the whole tree; none runs it "
                   "unobserved (for comparisons).")
@click.option("--trace-profile", type=click.Choice(["default", "full"]), default="default", show_default=True,
              help="What traced programs stop for: default skips read-only opens (near full speed); "
                   "full also reports them (a static program reading /etc/shadow), at a cost.")
@click.option("--rules", "rules", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="A Falco rules file to evaluate (repeat for more; `default` is the packaged ruleset). "
                   "Given files replace the packaged ruleset.")
@click.option("--no-rules", is_flag=True, help="Evaluate no rules: events only.")
@click.option("--skip-bad-rules", is_flag=True,
              help="Start even when a rules file has errors (the rules that load are used).")
@click.option("--alerts-stderr/--no-alerts-stderr", default=True, show_default=True,
              envvar="PRELOAD_ALERTS_STDERR",
              help="Alerts as Falco JSON lines on stderr, the container's log stream [env "
                   "PRELOAD_ALERTS_STDERR]. They always go to STATE_DIR/alerts.jsonl.")
@click.option("--webhook", metavar="URL", envvar="PRELOAD_WEBHOOK",
              help="Also post each alert to URL as Falco's http_output does (Falcosidekick's / "
                   "endpoint) [env PRELOAD_WEBHOOK]. Asynchronous: a slow or dead receiver never "
                   "slows anything; failed and dropped alerts are counted in the report.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(state_dir, attach, trace_profile, rules, no_rules, skip_bad_rules, alerts_stderr, webhook, command):
    """Run COMMAND under the agent, as its entrypoint wrapper.

    \b
    preload run -- python3 app.py
    preload run --state-dir /tmp/s -- sh -c 'cat /etc/hostname'

    Exits with COMMAND's status (128+N when killed by signal N; 127 when it is not found, 126 when
    it is not executable). Signals HUP INT QUIT USR1 USR2 TERM WINCH are forwarded to it and
    orphaned processes are reaped, as tini does. Events go to STATE_DIR/events.jsonl; alerts of
    the rules (the packaged ruleset unless --rules) to STATE_DIR/alerts.jsonl and stderr.
    """
    from preload import state, supervisor

    ruleset = False if no_rules else _checked_rules(rules, skip_bad_rules)
    if webhook:
        from preload.sinks.webhook import Webhook

        try:
            Webhook(webhook).close(0)  # its checks: a bad URL stops us here, not in the daemon
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--webhook") from None
    try:
        code = supervisor.run(list(command), state_dir, attach, trace_profile, ruleset, alerts_stderr,
                              webhook)
    except supervisor.CommandError as e:
        click.echo(f"preload: {e}", err=True)
        sys.exit(e.status)
    except state.StateError as e:
        raise click.ClickException(str(e)) from None
    _exit_now(code)


def _checked_rules(given, skip_bad):
    """The rule files for the daemon (None: the packaged ruleset), after a check: a broken file
    stops `preload run` before the application starts, unless skip_bad."""
    if not given:
        return None
    from preload import alerts

    paths = [p if p == "default" else os.path.abspath(p) for p in given]
    ruleset = alerts.load(paths)
    for problem in ruleset.problems:
        click.echo(f"preload: {problem}", err=True)
    if ruleset.problems and not skip_bad:
        raise click.ClickException(f"{len(ruleset.problems)} problem(s) in the rules; fix them, or "
                                   "start anyway with --skip-bad-rules")
    return paths


@main.group()
def rules():
    """Falco rules: check files, list the rules in effect.

    \b
    preload rules check my_rules.yaml
    preload rules list --rules default --rules my_rules.yaml
    """


@rules.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def check(files):
    """Load FILES as `preload run --rules` would; print every problem as FILE:LINE: ITEM: PROBLEM
    (exit status 1), and the rules that load, are skipped (with why) or are disabled."""
    from preload import alerts

    ruleset = alerts.load(list(files))
    for problem in ruleset.problems:
        click.echo(str(problem))
    click.echo(f"{len(ruleset.active)} rules active, {len(ruleset.skipped)} skipped, "
               f"{len(ruleset.disabled)} disabled, {len(ruleset.problems)} problems")
    for rule, reason in ruleset.skipped:
        click.echo(f"  skipped: {rule.name} ({rule.file}:{rule.line}): {reason}")
    for note in ruleset.notes:
        click.echo(f"  note: {note}")
    sys.exit(1 if ruleset.problems else 0)


@rules.command(name="list")
@click.option("--rules", "files", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Rules files, as for `preload run --rules` (default: the packaged ruleset).")
@FORMAT
def list_rules(files, fmt):
    """The rules in effect: name, priority, tags, where each is defined."""
    from preload import alerts

    ruleset = alerts.load(list(files))
    rows = [{"rule": r.name, "priority": r.priority, "tags": r.tags, "file": r.file, "line": r.line,
             "state": "active" if r.active else "disabled" if not r.enabled else "skipped"}
            for r in ruleset.rules]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["rule"]) for r in rows), default=0)
    for r in rows:
        click.echo(f"{r['rule']:<{width}}  {r['priority']:<13} {r['state']:<8}  "
                   f"{os.path.basename(r['file'])}:{r['line']}  {' '.join(r['tags'])}")
    for problem in ruleset.problems:
        click.echo(f"problem: {problem}", err=True)


@main.command()
@click.option("--ld-so-preload", "ld_so_preload", is_flag=True, required=True,
              help="Name the hook in /etc/ld.so.preload.")
def install(ld_so_preload):
    """Load the hook into every glibc program of the image, as root at image build.

    \b
    RUN preload install --ld-so-preload
    ENTRYPOINT ["preload", "run", "--"]

    `preload run` puts the hook in the environment of the application and every program it starts,
    and puts it back when a program takes it out. /etc/ld.so.preload also covers processes that do
    not descend from the entrypoint: `docker exec`, `podman exec` and ECS Exec sessions, and
    programs started with an emptied environment. They report to the daemon of the running
    container; where none runs (later RUN steps of the build) the hook stays silent. Programs linked
    against musl do not read that file: for them the entrypoint's environment is the only way in.
    Idempotent; the file's other entries are kept.
    """
    from preload import supervisor

    try:
        changed = supervisor.install_ld_so_preload()
    except supervisor.InstallError as e:
        raise click.ClickException(str(e)) from None
    state = "now names" if changed else "already named"
    click.echo(f"{supervisor.LD_SO_PRELOAD} {state} {supervisor.HOOK}")


@main.command(hidden=True)
@STATE_DIR
@click.option("--listen-fd", type=int, help="Inherited listening socket (from preload run).")
@click.option("--control-fd", type=int, help="Pipe whose end of file means: drain and stop.")
@click.option("--restart-gap", type=float, help="Seconds without a daemon before this one.")
@click.option("--previous-status", type=int, help="Exit status of the daemon this one replaces.")
def daemon(state_dir, listen_fd, control_fd, restart_gap, previous_status):
    """Receive records and write the event log (started by `preload run`)."""
    from preload import daemon as daemon_mod, state

    st = state.State(state_dir or state.default_dir())
    st.root.mkdir(parents=True, exist_ok=True)
    _log_to_stderr(level="INFO", prefix="preload-daemon")
    sys.exit(daemon_mod.main(listen_fd=listen_fd, socket_path=str(st.socket), events_path=str(st.events),
                             spool_dir=str(st.spool), restart_gap=restart_gap, previous_status=previous_status,
                             control_fd=control_fd))


@main.command()
@STATE_DIR
@click.option("--format", "fmt", type=click.Choice(["text", "json", "ocsf"]), default="text", show_default=True,
              help="text for people, json for scripts, ocsf: the events and alerts themselves as "
                   "OCSF 1.1 JSON lines (Detection Finding, Process, File System and Network "
                   "Activity), for Security Lake and other OCSF pipelines.")
@click.argument("logs", nargs=-1, type=click.Path(dir_okay=False))
def report(state_dir, fmt, logs):
    """Summarise what the agent saw: alerts, process tree, programs, files, network, losses.

    Reads STATE_DIR/events.jsonl and the alerts.jsonl beside it, or the LOGS given (several logs,
    e.g. from many containers, are merged).
    """
    from pathlib import Path

    from preload import report as report_mod, state

    paths = list(logs) or [str(Path(state_dir or state.existing_dir()) / state.EVENTS)]
    if fmt == "ocsf":
        try:
            for line in report_mod.ocsf_lines(paths):
                sys.stdout.buffer.write(line + b"\n")
        except FileNotFoundError as e:
            raise click.ClickException(f"no event log at {e.filename}") from None
        return
    try:
        log = report_mod.load(paths)
    except FileNotFoundError as e:
        raise click.ClickException(f"no event log at {e.filename}: run 'preload run -- COMMAND' first, "
                                   "or give --state-dir or the log's path") from None
    summary = report_mod.summarize(log)
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(report_mod.render_text(summary), nl=False)


@main.command()
@FORMAT
@click.argument("paths", nargs=-1, required=True)
def inspect(fmt, paths):
    """Classify executables and say how preload would watch each, and with what.

    \b
    dynamic-glibc                -> the libc hook (LD_PRELOAD), libpreload.so
    dynamic-musl                 -> the libc hook (LD_PRELOAD), libpreload-musl.so
    static, static-pie, go       -> needs the ptrace fallback, preload-trace
    foreign (32-bit, other CPU)  -> preload-trace lets its calls through unseen and watches what
                                    it starts
    script                       -> whatever its interpreter needs
    """
    from preload import elf

    targets = [elf.classify(p) for p in paths]
    if fmt == "json":
        click.echo(json.dumps([elf.to_dict(t) for t in targets], indent=2))
    else:
        click.echo(elf.format_text(targets))
    here = os.path.dirname(os.path.abspath(__file__))
    for agent in sorted({t.agent for t in targets if t.agent}):
        if not os.path.exists(os.path.join(here, agent)):
            click.echo(f"preload: {agent} is not installed: those programs would run unwatched", err=True)
    if any(t.kind == "missing" for t in targets):
        sys.exit(1)
