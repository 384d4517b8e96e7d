"""Rules on events: alerts in Falco's JSON output format.

The daemon hands every event to an Alerter. The ruleset's index gives the rules that can match
the event's type; the ones whose condition holds become alerts, shaped as Falco's json_output
(`time rule priority output output_fields source tags hostname`), which is what Falcosidekick
and every Falco log pipeline read. Where they go is the caller's choice (sinks: callables)."""
import os
import pwd
import re
import socket
import time

from preload.rules import EventFields, load_rules, output_fields, render_output

DEFAULT_RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules", "default_rules.yaml")
# Falco prints priorities capitalised in its alerts
PRIORITY_NAMES = {"EMERGENCY": "Emergency", "ALERT": "Alert", "CRITICAL": "Critical", "ERROR": "Error",
                  "WARNING": "Warning", "NOTICE": "Notice", "INFORMATIONAL": "Informational",
                  "DEBUG": "Debug"}


def rule_paths(given):
    """The files to load: those given, where `default` names the packaged ruleset; the packaged
    ruleset alone when none are given."""
    if not given:
        return [DEFAULT_RULES]
    return [DEFAULT_RULES if p == "default" else p for p in given]


def container_id():
    """Falco's container.id, from inside: the 12-digit id the runtime put in the hostname or in
    our mounts, else "host"."""
    host = socket.gethostname()
    if re.fullmatch(r"[0-9a-f]{12}", host):
        return host
    try:
        with open("/proc/self/mountinfo") as f:
            m = re.search(r"/(?:containers|docker|libpod-|crio-)/?([0-9a-f]{64})", f.read())
        if m:
            return m.group(1)[:12]
    except OSError:
        pass
    return "host"


class Fields(EventFields):
    """The fields events do not carry, derived from the process table when a rule asks."""

    def __init__(self, procs, container):
        super().__init__(self._ancestors)
        self._procs = procs
        self._container = container
        self._users = {}
        self.memo = {}  # macro results for the event being checked (see rules.condition)

    def _ancestors(self, event):
        return [(p.pid, p.name) for p in self._procs.ancestors(event.get("proc.pid"))]

    def get(self, event, field, arg=None):
        if arg is None and field not in event:
            derive = _MORE.get(field)
            if derive is not None:
                return derive(self, event)
        return super().get(event, field, arg)

    def _user_name(self, event):
        uid = event.get("user.uid")
        if not isinstance(uid, int):
            return None
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = str(uid)
        return self._users[uid]

    def _tty(self, event):
        try:
            with open(f"/proc/{int(event.get('proc.pid'))}/stat", "rb") as f:
                stat = f.read()
            return int(stat[stat.rindex(b")") + 2:].split()[4])  # tty_nr
        except (OSError, ValueError, TypeError, IndexError):
            return None

    def _duration(self, event):
        p = self._procs.known(event.get("proc.pid"))
        return time.time_ns() - p.start_ns if p is not None and p.start_ns else None


_MORE = {
    "user.name": Fields._user_name,
    "proc.tty": Fields._tty,
    "proc.duration": Fields._duration,
    "container.id": lambda self, event: self._container,
}


class Alerter:
    """Evaluates a ruleset on events and passes each alert to the sinks."""

    def __init__(self, ruleset, procs, sinks=(), hostname=None):
        self.ruleset = ruleset
        self.sinks = list(sinks)
        self.hostname = hostname or socket.gethostname()
        self.fields = Fields(procs, container_id())
        self.count = 0

    def check(self, event):
        self.fields.memo.clear()
        for rule in self.ruleset.candidates(event):
            if rule.check(event, self.fields):
                alert = self.alert(rule, event)
                self.count += 1
                for sink in self.sinks:
                    sink(alert)

    def alert(self, rule, event):
        priority = PRIORITY_NAMES.get(rule.priority, rule.priority.capitalize())
        t = event.get("time", "")
        clock = t[11:29] if len(t) >= 29 else t  # HH:MM:SS.nnnnnnnnn, as Falco prefixes its lines
        return {"time": t, "rule": rule.name, "priority": priority,
                "output": f"{clock}: {priority} {render_output(rule.output, event, self.fields)}",
                "output_fields": output_fields(rule.output, event, self.fields), "source": "syscall", "tags": list(rule.tags),
                "hostname": self.hostname}


def load(given):
    """The ruleset for `given` rule files (see rule_paths)."""
    return load_rules(rule_paths(given))
