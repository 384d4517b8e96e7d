"""Falco rules files: loading, append/override, exceptions, problems, the evt.type index, output."""

import textwrap

import pytest

from preload.rules.condition import EventFields, compile_condition
from preload.rules.loader import Problem, Rule, load_rules, render_output


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def line_of(path, marker):
    """1-based line of the first line of ``path`` that contains ``marker``."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if marker in line:
            return n
    raise AssertionError(f"{marker!r} not in {path}")


def by_name(rs, name):
    [rule] = [r for r in rs.rules if r.name == name]
    return rule


def names(rules):
    return [r.name for r in rules]


FULL = """
- required_engine_version: 0.26.0

- required_plugin_versions:
    - name: k8saudit
      version: 0.1.0

- list: shell_binaries
  items: [bash, sh]

- list: shell_binaries
  items: [zsh]
  append: true

- list: more_shells
  items: [shell_binaries, dash]

- list: secret_files
  items: [/etc/shadow]

- list: secret_files
  items: [/etc/sudoers]
  override:
    items: append

- macro: open_read
  condition: evt.type in (open, openat) and evt.is_open_read = true

- macro: spawned
  condition: evt.type = execve and evt.dir = "<"

- macro: spawned
  condition: evt.type = execve and evt.dir = "<" and evt.res = SUCCESS
  override:
    condition: replace

- macro: trusted
  condition: proc.name = sshd

- macro: trusted
  condition: or proc.name = systemd
  append: true

- rule: Shell started
  desc: a shell ran
  condition: spawned and proc.name in (more_shells) and not trusted
  output: "shell %proc.name (parent %proc.pname) ran %proc.cmdline"
  priority: Warning
  tags: [shell]
  exceptions:
    - name: allowed_parents
      fields: proc.pname
      values: [cron]

- rule: Shell started
  exceptions:
    - name: allowed_parents
      values: [at]
  append: true

- rule: Read secret
  desc: a secret file was read
  condition: open_read and fd.name in (secret_files)
  output: "%proc.name read %fd.name"
  priority: ERROR
  tags: [files]
  exceptions:
    - name: known_readers
      fields: [proc.name, fd.name]
      values:
        - [sudo, /etc/sudoers]
        - ["my reader", /etc/shadow]
    - name: backup_dirs
      fields: [proc.name, proc.cwd]
      comps: [=, in]
      values:
        - [tar, [/backup, /srv/backup]]

- rule: Read secret
  condition: and not proc.name = ignored
  override:
    condition: append

- rule: Read secret
  priority: critical
  tags: [secrets]
  override:
    priority: replace
    tags: append

- rule: Outbound connection
  desc: any connect
  condition: evt.type = connect
  output: "%proc.name connected to %fd.name"
  priority: INFO
  enabled: false

- rule: K8s thing
  desc: not ours
  condition: ka.verb = create
  output: "%ka.user.name"
  priority: NOTICE
  source: k8s_audit

- rule: Container thing
  desc: needs a field we cannot provide
  condition: evt.type = open and container.image.repository = nginx
  output: "%container.image.repository"
  priority: NOTICE

- rule: Any process
  desc: no evt.type constraint
  condition: proc.name = watched
  output: "%proc.name %evt.type"
  priority: DEBUG
"""

EXEC_BASH = {"evt.type": "execve", "evt.dir": "<", "evt.res": "SUCCESS", "proc.name": "bash",
             "proc.pname": "python3", "proc.cmdline": "bash -c id", "proc.pid": 10}
OPEN_SHADOW = {"evt.type": "openat", "proc.name": "cat", "fd.name": "/etc/shadow",
               "evt.is_open_read": True, "proc.cwd": "/root", "evt.res": "SUCCESS"}


@pytest.fixture
def full(tmp_path):
    path = write(tmp_path, "rules.yaml", FULL)
    return path, load_rules([path])


# ----------------------------------------------------------------------------- loading

def test_full_file_loads_without_problems(full):
    _, rs = full
    assert rs.problems == []
    assert names(rs.rules) == ["Shell started", "Read secret", "Outbound connection",
                               "K8s thing", "Container thing", "Any process"]
    assert names(rs.active) == ["Shell started", "Read secret", "Any process"]
    assert all(isinstance(r, Rule) for r in rs.rules)


def test_plugin_requirements_are_noted_not_problems(full):
    path, rs = full
    [note] = rs.notes
    assert note.item == "required_plugin_versions"
    assert note.line == line_of(path, "required_plugin_versions")


def test_lists_nested_appended_and_overridden(full):
    _, rs = full
    assert rs.lists["shell_binaries"] == ["bash", "sh", "zsh"]
    assert rs.lists["secret_files"] == ["/etc/shadow", "/etc/sudoers"]
    assert rs.lists["more_shells"] == ["shell_binaries", "dash"]


def test_macros_replaced_and_appended(full):
    _, rs = full
    assert rs.macros["spawned"].endswith("evt.res = SUCCESS")
    assert rs.macros["trusted"] == "proc.name = sshd or proc.name = systemd"


def test_rule_fields_and_priorities(full):
    path, rs = full
    shell = by_name(rs, "Shell started")
    assert shell.priority == "WARNING"
    assert shell.tags == ["shell"]
    assert shell.desc == "a shell ran"
    assert (shell.file, shell.line) == (str(path), line_of(path, "rule: Shell started"))
    assert by_name(rs, "Outbound connection").priority == "INFORMATIONAL"
    assert by_name(rs, "Any process").priority == "DEBUG"


def test_override_replace_and_append_on_rule(full):
    _, rs = full
    secret = by_name(rs, "Read secret")
    assert secret.priority == "CRITICAL"
    assert secret.tags == ["files", "secrets"]
    assert "and not proc.name = ignored" in secret.condition


def test_disabled_rule_is_inactive_not_a_problem(full):
    _, rs = full
    assert names(rs.disabled) == ["Outbound connection"]
    assert by_name(rs, "Outbound connection").check is not None
    assert rs.evaluate({"evt.type": "connect", "proc.name": "curl"}) == []


def test_non_syscall_source_and_unknown_field_are_skipped_with_reasons(full):
    _, rs = full
    reasons = {rule.name: reason for rule, reason in rs.skipped}
    assert set(reasons) == {"K8s thing", "Container thing"}
    assert "k8s_audit" in reasons["K8s thing"]
    assert "unknown field 'container.image.repository'" in reasons["Container thing"]
    assert by_name(rs, "Container thing").skipped == reasons["Container thing"]
    assert by_name(rs, "Container thing").check is None


def test_enabled_false_on_existing_rule_disables_it(tmp_path):
    path = write(tmp_path, "r.yaml", """
        - rule: R
          desc: d
          condition: evt.type = open
          output: o
          priority: NOTICE
        - rule: R
          enabled: false
        """)
    rs = load_rules([path])
    assert rs.problems == [] and rs.active == [] and names(rs.disabled) == ["R"]


# ----------------------------------------------------------------------------- evaluation

def test_shell_rule_fires_and_exceptions_apply(full):
    _, rs = full
    assert names(rs.evaluate(EXEC_BASH)) == ["Shell started"]
    assert names(rs.evaluate(dict(EXEC_BASH, **{"proc.name": "dash"}))) == ["Shell started"]
    assert names(rs.evaluate(dict(EXEC_BASH, **{"proc.name": "zsh"}))) == ["Shell started"]
    # nested list member via more_shells -> shell_binaries
    assert rs.evaluate(dict(EXEC_BASH, **{"proc.name": "python3"})) == []
    # single-field exception, and its appended value
    assert rs.evaluate(dict(EXEC_BASH, **{"proc.pname": "cron"})) == []
    assert rs.evaluate(dict(EXEC_BASH, **{"proc.pname": "at"})) == []
    # the appended macro condition
    assert rs.evaluate(dict(EXEC_BASH, **{"proc.name": "sh", "proc.pname": "x"})) != []
    # the override-replaced macro requires success
    assert rs.evaluate(dict(EXEC_BASH, **{"evt.res": "ENOENT"})) == []
    assert rs.evaluate(dict(EXEC_BASH, **{"evt.dir": ">"})) == []


def test_trusted_macro_append_applies(full):
    _, rs = full
    # proc.name is the shell, so "trusted" cannot hold here; check the macro itself works
    trusted = compile_condition("trusted", rs.macros, rs.lists)
    assert trusted({"proc.name": "systemd"}) and trusted({"proc.name": "sshd"})
    assert not trusted({"proc.name": "bash"})


def test_read_secret_with_multi_field_and_in_exceptions(full):
    _, rs = full
    assert names(rs.evaluate(OPEN_SHADOW)) == ["Read secret"]
    sudoers = dict(OPEN_SHADOW, **{"fd.name": "/etc/sudoers"})
    assert names(rs.evaluate(sudoers)) == ["Read secret"]          # appended list item
    assert rs.evaluate(dict(sudoers, **{"proc.name": "sudo"})) == []      # tuple matches
    assert names(rs.evaluate(dict(OPEN_SHADOW, **{"proc.name": "sudo"}))) == ["Read secret"]
    assert rs.evaluate(dict(OPEN_SHADOW, **{"proc.name": "my reader"})) == []  # quoted value
    tar = dict(OPEN_SHADOW, **{"proc.name": "tar"})
    assert names(rs.evaluate(tar)) == ["Read secret"]
    assert rs.evaluate(dict(tar, **{"proc.cwd": "/srv/backup"})) == []    # comps in
    assert rs.evaluate(dict(OPEN_SHADOW, **{"proc.name": "ignored"})) == []   # appended cond
    assert rs.evaluate(dict(OPEN_SHADOW, **{"evt.is_open_read": False})) == []
    assert rs.evaluate(dict(OPEN_SHADOW, **{"fd.name": "/etc/passwd"})) == []


def test_exception_condition_text(full):
    _, rs = full
    cond = by_name(rs, "Read secret").condition
    assert cond.startswith("(open_read and fd.name in (secret_files)")
    assert "(proc.name = sudo and fd.name = /etc/sudoers)" in cond
    assert '(proc.name = "my reader" and fd.name = /etc/shadow)' in cond
    assert "proc.cwd in (/backup, /srv/backup)" in cond
    assert "not proc.pname in (cron, at)" in by_name(rs, "Shell started").condition


def test_rule_without_evt_type_runs_for_every_event(full):
    _, rs = full
    watched = {"evt.type": "preload.end", "proc.name": "watched"}
    assert names(rs.evaluate(watched)) == ["Any process"]
    assert names(rs.evaluate(dict(OPEN_SHADOW, **{"proc.name": "watched"}))) == \
        ["Read secret", "Any process"]


# ----------------------------------------------------------------------------- evt.type index

def test_evt_types_derived_through_macros_and_lists(full):
    _, rs = full
    assert by_name(rs, "Shell started").evt_types == frozenset({"execve"})
    assert by_name(rs, "Read secret").evt_types == frozenset({"open", "openat"})
    assert by_name(rs, "Any process").evt_types is None


def test_candidates_only_rules_indexed_for_the_type(full):
    _, rs = full
    assert names(rs.candidates({"evt.type": "execve"})) == ["Shell started", "Any process"]
    assert names(rs.candidates({"evt.type": "open"})) == ["Read secret", "Any process"]
    assert names(rs.candidates({"evt.type": "connect"})) == ["Any process"]
    assert names(rs.candidates({})) == ["Any process"]


def test_open_rule_is_not_evaluated_for_execve(tmp_path):
    path = write(tmp_path, "r.yaml", """
        - rule: Opens
          desc: d
          condition: evt.type = open and proc.name = bash
          output: o
          priority: NOTICE
        """)
    rs = load_rules([path])
    [rule] = rs.active
    calls = []
    real = rule.check
    rule.check = lambda e, s=None: calls.append(e["evt.type"]) or real(e, s)
    assert rs.evaluate(EXEC_BASH) == []
    assert calls == []
    assert rs.evaluate({"evt.type": "open", "proc.name": "bash"}) == [rule]
    assert calls == ["open"]


@pytest.mark.parametrize("cond, expected", [
    ("evt.type = open", {"open"}),
    ("evt.type in (open, creat) and evt.type in (creat, connect)", {"creat"}),
    ("(evt.type = open or evt.type = creat) and proc.name = x", {"open", "creat"}),
    ("evt.type = open or proc.name = x", None),
    ("not evt.type = open", None),
    ("proc.name = x and evt.type in my_types", {"bind", "listen"}),
    ("evt.type != open", None),
    ("evt.type = 'open'", {"open"}),
])
def test_evt_types_of_conditions(tmp_path, cond, expected):
    path = write(tmp_path, "r.yaml", f"""
        - list: my_types
          items: [bind, listen]
        - rule: R
          desc: d
          condition: {cond}
          output: o
          priority: NOTICE
        """)
    rs = load_rules([path])
    assert rs.problems == []
    assert rs.active[0].evt_types == (None if expected is None else frozenset(expected))


# ----------------------------------------------------------------------------- problems

RULE_OK = """
- rule: Good
  desc: fine
  condition: evt.type = open
  output: o
  priority: NOTICE
"""

ERROR_CASES = [
    ("syntax", """
- rule: Bad
  desc: d
  condition: evt.type = open and (proc.name = x
  output: o
  priority: NOTICE
""", "rule 'Bad'", "never closed"),
    ("undefined macro", """
- rule: Bad
  desc: d
  condition: evt.type = open and no_such_macro
  output: o
  priority: NOTICE
""", "rule 'Bad'", "undefined macro 'no_such_macro'"),
    ("undefined list", """
- rule: Bad
  desc: d
  condition: fd.name in no_such_list
  output: o
  priority: NOTICE
""", "rule 'Bad'", "undefined list 'no_such_list'"),
    ("missing output", """
- rule: Bad
  desc: d
  condition: evt.type = open
  priority: NOTICE
""", "rule 'Bad'", "missing 'output'"),
    ("missing condition and priority", """
- rule: Bad
  desc: d
  output: o
""", "rule 'Bad'", "missing 'condition', 'priority'"),
    ("unknown priority", """
- rule: Bad
  desc: d
  condition: evt.type = open
  output: o
  priority: LOUD
""", "rule 'Bad'", "unknown priority 'LOUD'"),
    ("exception without fields", """
- rule: Bad
  desc: d
  condition: evt.type = open
  output: o
  priority: NOTICE
  exceptions:
    - name: e1
      values: [[a]]
""", "rule 'Bad'", "bad exception: exception 'e1': 'fields'"),
    ("exception tuple of the wrong size", """
- rule: Bad
  desc: d
  condition: evt.type = open
  output: o
  priority: NOTICE
  exceptions:
    - name: e2
      fields: [proc.name, fd.name]
      values: [[a]]
""", "rule 'Bad'", "each value must be a list of 2 values"),
    ("exception comps mismatch", """
- rule: Bad
  desc: d
  condition: evt.type = open
  output: o
  priority: NOTICE
  exceptions:
    - name: e3
      fields: [proc.name, fd.name]
      comps: [=]
      values: [[a, b]]
""", "rule 'Bad'", "'comps' must list one operator"),
    ("exception unknown operator", """
- rule: Bad
  desc: d
  condition: evt.type = open
  output: o
  priority: NOTICE
  exceptions:
    - name: e4
      fields: proc.name
      comps: sounds_like
      values: [a]
""", "rule 'Bad'", "condition:"),
    ("append to undefined rule", """
- rule: Bad
  condition: and proc.name = x
  append: true
""", "rule 'Bad'", "undefined rule 'Bad'"),
    ("append to undefined macro", """
- macro: bad
  condition: or proc.name = x
  override:
    condition: append
""", "macro 'bad'", "cannot append to undefined macro 'bad'"),
    ("append to undefined list", """
- list: bad
  items: [x]
  append: true
""", "list 'bad'", "cannot append to undefined list 'bad'"),
    ("override of a key the item lacks", """
- rule: Bad
  desc: d
  condition: evt.type = open
  output: o
  priority: NOTICE
- rule: Bad
  desc: other
  override:
    priority: replace
""", "rule 'Bad'", "does not define it"),
    ("override with a key it does not name", """
- rule: Bad
  desc: d
  condition: evt.type = open
  output: o
  priority: NOTICE
- rule: Bad
  desc: other
  priority: ALERT
  override:
    priority: replace
""", "rule 'Bad'", "key(s) not named in 'override': desc"),
    ("append with a key it cannot append", """
- rule: Bad
  desc: d
  condition: evt.type = open
  output: o
  priority: NOTICE
- rule: Bad
  priority: ALERT
  append: true
""", "rule 'Bad'", "cannot append: priority"),
    ("item of two kinds", """
- rule: Bad
  macro: bad
""", "item", "exactly one of"),
]


@pytest.mark.parametrize("case, body, item, message", ERROR_CASES,
                         ids=[c[0] for c in ERROR_CASES])
def test_error_is_a_problem_with_line_and_name(tmp_path, case, body, item, message):
    path = write(tmp_path, "bad.yaml", RULE_OK + body)
    rs = load_rules([path])
    assert len(rs.problems) == 1, rs.problems
    [problem] = rs.problems
    assert isinstance(problem, Problem)
    name = item.split("'")[1] if "'" in item else "Bad"
    kind = item.split()[0]
    expected_line = line_of(path, f"- {kind}: {name}") if kind != "item" \
        else line_of(path, "- rule: Bad")
    if case.startswith(("override", "append with")):   # the second definition is at fault
        expected_line = path.read_text().splitlines().index("- rule: Bad", expected_line) + 1
    assert (problem.file, problem.line, problem.item) == (str(path), expected_line, item)
    assert message in problem.message
    assert str(problem) == f"{path}:{expected_line}: {item}: {problem.message}"
    assert "Good" in names(rs.active)
    if case.startswith(("override", "append with")):   # the faulty item is dropped, not the rule
        assert by_name(rs, "Bad").desc == "d" and "Bad" in names(rs.active)
    else:
        assert "Bad" not in names(rs.active)


def test_macro_loop_is_a_problem_for_macro_and_rule(tmp_path):
    path = write(tmp_path, "loop.yaml", """
        - macro: a
          condition: proc.name = x or b
        - macro: b
          condition: a
        - rule: Loops
          desc: d
          condition: evt.type = open and a
          output: o
          priority: NOTICE
        """)
    rs = load_rules([path])
    by_item = {p.item: p for p in rs.problems}
    assert set(by_item) == {"macro 'a'", "macro 'b'", "rule 'Loops'"}
    assert "macro loop: a -> b -> a" in by_item["rule 'Loops'"].message
    assert by_item["rule 'Loops'"].line == line_of(path, "- rule: Loops")
    assert by_item["macro 'b'"].line == line_of(path, "- macro: b")
    assert rs.active == []


def test_yaml_error_is_a_problem_with_its_line(tmp_path):
    path = write(tmp_path, "broken.yaml", """
        - rule: R
          desc: d
          condition: [unclosed
          output: o
        """)
    rs = load_rules([path])
    [problem] = rs.problems
    assert problem.item == "file" and problem.file == str(path)
    assert "YAML error" in problem.message
    assert problem.line >= line_of(path, "condition:")
    assert rs.rules == []


def test_not_a_sequence_and_missing_file_are_problems(tmp_path):
    path = write(tmp_path, "map.yaml", "rule: R\n")
    rs = load_rules([path, tmp_path / "missing.yaml"])
    assert [p.item for p in rs.problems] == ["file", "file"]
    assert "sequence" in rs.problems[0].message and rs.problems[0].line == 1
    assert "cannot read" in rs.problems[1].message


def test_empty_file_is_fine(tmp_path):
    rs = load_rules([write(tmp_path, "empty.yaml", "")])
    assert rs.rules == [] and rs.problems == []


# ----------------------------------------------------------------------------- several files

def test_second_file_overrides_the_first(tmp_path):
    first = write(tmp_path, "a.yaml", """
        - list: editors
          items: [vi]
        - macro: editing
          condition: proc.name in (editors)
        - rule: Edit
          desc: an editor opened a file
          condition: evt.type = open and editing
          output: "%proc.name edited %fd.name"
          priority: NOTICE
        - rule: Noisy
          desc: d
          condition: evt.type = open
          output: o
          priority: DEBUG
        """)
    second = write(tmp_path, "b.yaml", """
        - list: editors
          items: [nano]
          append: true
        - macro: editing
          condition: proc.name in (editors) and fd.name startswith /etc
        - rule: Edit
          priority: alert
          override:
            priority: replace
        - rule: Noisy
          enabled: false
          override:
            enabled: replace
        """)
    rs = load_rules([first, second])
    assert rs.problems == []
    edit = by_name(rs, "Edit")
    assert (edit.file, edit.line, edit.priority) == (str(first), 5, "ALERT")
    assert names(rs.active) == ["Edit"]
    assert names(rs.evaluate({"evt.type": "open", "proc.name": "nano",
                              "fd.name": "/etc/hosts"})) == ["Edit"]
    assert rs.evaluate({"evt.type": "open", "proc.name": "vi", "fd.name": "/tmp/x"}) == []
    # in the other order the append has nothing to extend
    rs2 = load_rules([second, first])
    assert {p.item for p in rs2.problems} == {"list 'editors'", "rule 'Edit'", "rule 'Noisy'"}


# ----------------------------------------------------------------------------- output

def test_evaluate_passes_the_field_source(tmp_path):
    path = write(tmp_path, "r.yaml", """
        - rule: Shell from web server
          desc: d
          condition: evt.type = execve and proc.name = sh and proc.aname in (nginx)
          output: "%proc.name under %proc.aname[2]"
          priority: ERROR
        """)
    rs = load_rules([path])
    event = {"evt.type": "execve", "proc.name": "sh", "proc.pid": 3}
    chain = EventFields(ancestors=lambda e: [(2, "bash"), (1, "nginx")])
    assert rs.evaluate(event) == []
    [rule] = rs.evaluate(event, chain)
    assert render_output(rule.output, event, chain) == "sh under nginx"


def test_render_output_substitutes_fields():
    event = {"evt.type": "openat", "proc.name": "cat", "fd.name": "/etc/shadow",
             "evt.arg.flags": "O_RDONLY", "preload.argv": ["cat", "/etc/shadow"],
             "evt.is_open_read": True, "proc.pid": 42, "time": "2026-11-27T05:40:00Z"}
    out = render_output("%evt.time %proc.name (%proc.pid) %evt.type %fd.name "
                        "flags=%evt.arg[flags] %evt.arg.flags argv=%preload.argv "
                        "read=%evt.is_open_read user=%user.name parent=%proc.aname[1] "
                        "dir=%fd.directory.", event)
    assert out == ("2026-11-27T05:40:00Z cat (42) openat /etc/shadow flags=O_RDONLY O_RDONLY "
                   "argv=cat,/etc/shadow read=true user=<NA> parent=<NA> dir=/etc.")


def test_render_output_uses_the_field_source():
    class Chain:
        def get(self, event, field, arg=None):
            return "init" if (field, arg) == ("proc.aname", 1) else event.get(field)

    assert render_output("%proc.aname[1] 100%", {}, Chain()) == "init 100%"
    assert render_output("%proc.name", {}) == "<NA>"
