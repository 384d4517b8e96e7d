"""Falco rules files: load, resolve, compile and index them.

``load_rules(paths, fields=FIELDS) -> Ruleset`` reads Falco rules files (YAML sequences of
``rule``/``macro``/``list``/``required_engine_version``/``required_plugin_versions`` items) in
order. Macros and lists are global across the files; a later definition replaces an earlier one;
``append: true`` and ``override: {key: append|replace}`` extend or replace an existing item.
Rules are compiled once every file is read, so a macro may be used before it is defined.

Nothing in a rules file makes ``load_rules`` raise: every fault becomes a ``Problem`` (file,
1-based line of the item, ``rule 'X'``/``macro 'y'``/``list 'z'``, message) and the rule it
concerns is not active. A rule that reads a field we cannot provide, or whose ``source`` is not
``syscall``, is *skipped* with a reason: never a problem, never a match. ``enabled: false`` makes
a rule inactive (``Ruleset.disabled``). Plugin requirements are accepted and noted
(``Ruleset.notes``).

Each active rule gets ``evt_types``: the event types its condition can match, derived from the
expanded condition (``evt.type = X``/``evt.type in (...)`` combined through ``and``/``or``;
anything under ``not`` or not constraining evt.type means "any"), or None when any type can
match. ``Ruleset.candidates(event)`` looks the event's type up in an index built at load time, so
``evaluate`` never runs a rule for ``open`` on an ``execve`` event.

``render_output(template, event, source=None)`` substitutes Falco's ``%field`` and
``%field[arg]``; a field without a value renders as ``<NA>``. ``output_fields`` gives the same
fields with their values, as Falco's JSON alerts carry them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, Iterable, Mapping, Optional

import yaml

from .condition import FIELDS, ConditionError, EventFields, compile_condition

__all__ = ["Rule", "Problem", "Ruleset", "load_rules", "output_fields", "render_output", "PRIORITIES"]

PRIORITIES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFORMATIONAL",
              "DEBUG")
_PRIORITY_ALIASES = {"INFO": "INFORMATIONAL"}
_OUR_SOURCE = "syscall"
_LIST_COMPS = frozenset({"in", "intersects", "pmatch"})
_ITEM_KINDS = ("rule", "macro", "list", "required_engine_version", "required_plugin_versions")
_RULE_KEYS = frozenset({"rule", "desc", "condition", "output", "priority", "tags", "enabled",
                        "exceptions", "source", "append", "override", "warn_evttypes",
                        "skip-if-unknown-filter", "capture", "capture_duration"})
_RULE_APPENDABLE = frozenset({"condition", "output", "desc", "tags", "exceptions"})
_RULE_REPLACEABLE = frozenset({"condition", "output", "desc", "tags", "exceptions", "priority",
                               "enabled", "warn_evttypes", "skip-if-unknown-filter", "capture",
                               "capture_duration"})


@dataclass
class Rule:
    name: str
    desc: str = ""
    condition: str = ""          # the effective condition, exceptions included
    output: str = ""
    priority: str = ""
    tags: list = dc_field(default_factory=list)
    enabled: bool = True
    source: str = _OUR_SOURCE
    file: str = ""
    line: int = 0
    check: Optional[Callable] = None
    evt_types: Optional[frozenset] = None
    skipped: Optional[str] = None
    exceptions: list = dc_field(default_factory=list)   # as written (after append/override)

    @property
    def active(self) -> bool:
        return self.check is not None and self.enabled and self.skipped is None


@dataclass
class Problem:
    file: str
    line: int
    item: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.item}: {self.message}"


class Ruleset:
    """Loaded rules. ``rules`` is every rule in load order; ``active`` those that can fire."""

    def __init__(self):
        self.rules: list = []
        self.active: list = []
        self.skipped: list = []      # (rule, reason)
        self.problems: list = []     # Problem
        self.notes: list = []        # Problem-shaped notes that are not faults (plugins, sources)
        self.macros: dict = {}
        self.lists: dict = {}
        self._by_type: dict = {}
        self._any_type: list = []

    @property
    def disabled(self) -> list:
        return [r for r in self.rules if not r.enabled]

    def _index(self):
        order = {id(r): i for i, r in enumerate(self.active)}
        by_type: dict = {}
        any_type = []
        for rule in self.active:
            if rule.evt_types is None:
                any_type.append(rule)
            else:
                for t in rule.evt_types:
                    by_type.setdefault(t, []).append(rule)
        # Each type's candidates: its own rules plus the any-type ones, in load order.
        self._by_type = {t: sorted(rs + any_type, key=lambda r: order[id(r)])
                         for t, rs in by_type.items()}
        self._any_type = any_type

    def candidates(self, event: Mapping[str, Any]) -> list:
        """Active rules that can match ``event`` judging by its ``evt.type`` alone."""
        return self._by_type.get(event.get("evt.type"), self._any_type)

    def evaluate(self, event: Mapping[str, Any], source=None) -> list:
        """The active rules whose condition holds for ``event``, in load order."""
        return [r for r in self.candidates(event) if r.check(event, source)]


# --------------------------------------------------------------------------- reading files

class _Item:
    """One definition being assembled from the files (a rule, macro or list)."""

    def __init__(self, kind, name, data, file, line):
        self.kind, self.name, self.data, self.file, self.line = kind, name, data, file, line
        self.broken = None   # a message when a problem already condemns it


def _label(kind, name):
    return f"{kind} {name!r}" if name is not None else kind


class _RulesYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader that reads a bare ``=`` (YAML's "value" tag, common in ``comps``) as text.

    libyaml's parser where PyYAML has it: the pure-Python one is most of the daemon's start-up."""


_RulesYamlLoader.add_constructor("tag:yaml.org,2002:value",
                                 lambda loader, node: loader.construct_scalar(node))


def _read_items(path, problems):
    """[(line, mapping)] of one file; problems recorded for YAML and shape faults."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(path), 0, "file", f"cannot read: {exc}"))
        return []
    loader = _RulesYamlLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return []
        if not isinstance(root, yaml.SequenceNode):
            problems.append(Problem(str(path), root.start_mark.line + 1, "file",
                                    "a rules file must be a YAML sequence of items"))
            return []
        out = []
        for node in root.value:
            out.append((node.start_mark.line + 1, loader.construct_document(node)))
        return out
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 0
        what = "; ".join(str(part) for part in (getattr(exc, "context", None),
                                                 getattr(exc, "problem", None)) if part)
        problems.append(Problem(str(path), line, "file", f"YAML error: {what or exc}"))
        return []
    finally:
        loader.dispose()


def _override_spec(data, kind, appendable, replaceable):
    """``{key: 'append'|'replace'}`` for an item, or raise ValueError."""
    if "override" in data and data.get("append"):
        raise ValueError("'append' and 'override' cannot be used together")
    if "override" in data:
        spec = data["override"]
        if not isinstance(spec, dict) or not spec:
            raise ValueError("'override' must be a mapping of keys to 'append' or 'replace'")
        for key, how in spec.items():
            if how not in ("append", "replace"):
                raise ValueError(f"override of {key!r} must be 'append' or 'replace', not {how!r}")
            allowed = appendable if how == "append" else replaceable
            if key not in allowed:
                raise ValueError(f"{key!r} cannot be overridden with {how!r} on a {kind}")
            if key not in data:
                raise ValueError(f"override names {key!r} but the item does not define it")
        extra = sorted(set(data) - set(spec) - {kind, "override", "source"})
        if extra:
            raise ValueError("key(s) not named in 'override': " + ", ".join(extra))
        return dict(spec)
    if data.get("append"):
        extra = sorted(set(data) - set(appendable) - {kind, "append", "source"})
        if extra:
            raise ValueError("key(s) that 'append: true' cannot append: " + ", ".join(extra))
        return {k: "append" for k in appendable if k in data}
    return None


def _merge_exceptions(old, new):
    """Appended exceptions: values of a known name extend it, new names are added."""
    merged = [dict(e) if isinstance(e, dict) else e for e in old]
    by_name = {e.get("name"): e for e in merged if isinstance(e, dict)}
    for exc in new:
        if isinstance(exc, dict) and exc.get("name") in by_name:
            target = by_name[exc["name"]]
            target["values"] = list(target.get("values") or []) + list(exc.get("values") or [])
        else:
            merged.append(exc)
    return merged


def _apply_override(item, data, spec):
    for key, how in spec.items():
        new = data[key]
        old = item.data.get(key)
        if how == "replace" or old is None:
            item.data[key] = new
        elif key in ("condition", "output", "desc"):
            item.data[key] = f"{old} {new}"
        elif key == "exceptions":
            if not isinstance(new, list) or not isinstance(old, list):
                raise ValueError("'exceptions' must be a list")
            item.data[key] = _merge_exceptions(old, new)
        else:   # tags, items
            if not isinstance(new, list) or not isinstance(old, list):
                raise ValueError(f"{key!r} must be a list to be appended to")
            item.data[key] = list(old) + list(new)


class _Loader:
    def __init__(self):
        self.problems: list = []
        self.notes: list = []
        self.macros: dict = {}   # name -> _Item
        self.lists: dict = {}
        self.rules: dict = {}    # name -> _Item, insertion order = load order

    def problem(self, file, line, label, message):
        self.problems.append(Problem(file, line, label, message))

    def load_file(self, path):
        file = str(path)
        for line, data in _read_items(path, self.problems):
            if not isinstance(data, dict):
                self.problem(file, line, "item", "each item must be a mapping")
                continue
            kinds = [k for k in _ITEM_KINDS if k in data]
            if len(kinds) != 1:
                what = "none" if not kinds else ", ".join(kinds)
                self.problem(file, line, "item", "an item needs exactly one of rule, macro, "
                             f"list, required_engine_version, required_plugin_versions "
                             f"(found {what})")
                continue
            kind = kinds[0]
            if kind == "required_engine_version":
                if not isinstance(data[kind], (str, int, float)):
                    self.problem(file, line, kind, "must be a version number or string")
                continue
            if kind == "required_plugin_versions":
                self.notes.append(Problem(file, line, kind,
                                          "plugins are not supported; requirement ignored"))
                continue
            name = data[kind]
            if not isinstance(name, str) or not name:
                self.problem(file, line, kind, f"'{kind}' must name it with a string")
                continue
            getattr(self, "add_" + kind)(data, name, file, line)

    def _override(self, old, data, spec, file, line, label, undefined):
        """Applies an append/override item to the item it names, or says why it cannot."""
        if old is None:
            self.problem(file, line, label, undefined)
            return
        try:
            _apply_override(old, data, spec)
        except ValueError as exc:
            self.problem(file, line, label, str(exc))

    # -- macros and lists
    def _add_named(self, table, kind, body_key, data, name, file, line):
        label = _label(kind, name)
        source = data.get("source", _OUR_SOURCE)
        if source != _OUR_SOURCE:
            self.notes.append(Problem(file, line, label,
                                      f"source {source!r} is not supported; ignored"))
            return
        appendable = {body_key}
        try:
            spec = _override_spec(data, kind, appendable, appendable)
        except ValueError as exc:
            self.problem(file, line, label, str(exc))
            return
        if spec is not None:
            how = "append to" if any(h == "append" for h in spec.values()) else "override"
            self._override(table.get(name), data, spec, file, line, label,
                           f"cannot {how} undefined {kind} {name!r}")
            return
        if body_key not in data:
            self.problem(file, line, label, f"a {kind} needs '{body_key}'")
            return
        table[name] = _Item(kind, name, dict(data), file, line)

    def add_macro(self, data, name, file, line):
        if "condition" in data and not isinstance(data["condition"], str):
            self.problem(file, line, _label("macro", name), "'condition' must be a string")
            return
        self._add_named(self.macros, "macro", "condition", data, name, file, line)

    def add_list(self, data, name, file, line):
        if "items" in data and not isinstance(data["items"], list):
            self.problem(file, line, _label("list", name), "'items' must be a list")
            return
        self._add_named(self.lists, "list", "items", data, name, file, line)

    # -- rules
    def add_rule(self, data, name, file, line):
        label = _label("rule", name)
        unknown = sorted(set(data) - _RULE_KEYS)
        if unknown:
            self.problem(file, line, label, "unknown key(s): " + ", ".join(unknown))
            return
        try:
            spec = _override_spec(data, "rule", _RULE_APPENDABLE, _RULE_REPLACEABLE)
        except ValueError as exc:
            self.problem(file, line, label, str(exc))
            return
        old = self.rules.get(name)
        if spec is None and old is not None and set(data) <= {"rule", "enabled"}:
            spec = {"enabled": "replace"} if "enabled" in data else {}
        if spec is not None:
            self._override(old, data, spec, file, line, label,
                           f"cannot append to or override undefined rule {name!r}")
            return
        # A redefinition replaces the rule (keeping its place in the load order).
        self.rules[name] = _Item("rule", name, dict(data), file, line)


# --------------------------------------------------------------------------- building rules

def _quote(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and re.fullmatch(r"""[^()"'\s=,\\]+""", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value_list(value, lists) -> str:
    if isinstance(value, str) and value in lists:
        return value
    if not isinstance(value, (list, tuple)):
        value = [value]
    return "(" + ", ".join(_quote(v) for v in value) + ")"


def _exception_condition(exc, lists) -> Optional[str]:
    """The condition text one exception excludes, None when it has no values; ValueError."""
    if not isinstance(exc, dict):
        raise ValueError("each exception must be a mapping")
    name = exc.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("an exception needs a 'name'")
    where = f"exception {name!r}: "
    fields = exc.get("fields")
    comps = exc.get("comps")
    values = exc.get("values") or []
    if not isinstance(values, list):
        raise ValueError(where + "'values' must be a list")
    if isinstance(fields, str):
        comp = "in" if comps is None else comps
        if not isinstance(comp, str):
            raise ValueError(where + "with one field, 'comps' must be one operator")
        if not values:
            return None
        if comp in _LIST_COMPS:
            return f"{fields} {comp} {_value_list(values, lists)}"
        return "(" + " or ".join(f"{fields} {comp} {_quote(v)}" for v in values) + ")"
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise ValueError(where + "'fields' must be a field name or a list of them")
    if comps is None:
        comps = ["="] * len(fields)
    if not isinstance(comps, list) or len(comps) != len(fields) \
            or not all(isinstance(c, str) for c in comps):
        raise ValueError(where + f"'comps' must list one operator for each of the "
                         f"{len(fields)} fields")
    alternatives = []
    for tup in values:
        if not isinstance(tup, list) or len(tup) != len(fields):
            raise ValueError(where + f"each value must be a list of {len(fields)} values, "
                             f"one per field, not {tup!r}")
        parts = []
        for f, c, v in zip(fields, comps, tup):
            if c in _LIST_COMPS:
                parts.append(f"{f} {c} {_value_list(v, lists)}")
            else:
                parts.append(f"{f} {c} {_quote(v)}")
        alternatives.append("(" + " and ".join(parts) + ")")
    if not alternatives:
        return None
    return "(" + " or ".join(alternatives) + ")"


def _effective_condition(base, exceptions, lists) -> str:
    if exceptions is None:
        exceptions = []
    if not isinstance(exceptions, list):
        raise ValueError("'exceptions' must be a list")
    names = set()
    parts = [f"({base})"]
    for exc in exceptions:
        text = _exception_condition(exc, lists)
        if exc["name"] in names:
            raise ValueError(f"exception {exc['name']!r} is defined twice")
        names.add(exc["name"])
        if text is not None:
            parts.append(f"not {text}")
    return base if len(parts) == 1 else " and ".join(parts)


def _build_rule(item, macros, lists, fields, problems, compiled) -> Rule:
    d = item.data
    label = _label("rule", item.name)
    tags = d.get("tags") or []
    rule = Rule(name=item.name, desc=str(d.get("desc", "") or ""),
                condition=d.get("condition") if isinstance(d.get("condition"), str) else "",
                output=d.get("output") if isinstance(d.get("output"), str) else "",
                priority="", tags=list(tags) if isinstance(tags, list) else [],
                enabled=d.get("enabled", True), source=d.get("source", _OUR_SOURCE),
                file=item.file, line=item.line,
                exceptions=list(d.get("exceptions") or []) if isinstance(
                    d.get("exceptions"), list) else [])

    def fail(message):
        problems.append(Problem(item.file, item.line, label, message))
        return rule

    if rule.source != _OUR_SOURCE:
        rule.skipped = f"source {rule.source!r} is not supported (only {_OUR_SOURCE!r})"
        return rule
    missing = [k for k in ("condition", "output", "priority") if k not in d]
    if missing:
        return fail("missing " + ", ".join(repr(k) for k in missing))
    for key in ("condition", "output", "desc"):
        if key in d and not isinstance(d[key], str):
            return fail(f"{key!r} must be a string")
    if not isinstance(tags, list):
        return fail("'tags' must be a list")
    if not isinstance(rule.enabled, bool):
        return fail("'enabled' must be true or false")
    priority = str(d["priority"]).upper()
    priority = _PRIORITY_ALIASES.get(priority, priority)
    if priority not in PRIORITIES:
        return fail(f"unknown priority {d['priority']!r} (expected one of "
                    f"{', '.join(PRIORITIES)})")
    rule.priority = priority
    try:
        rule.condition = _effective_condition(d["condition"], d.get("exceptions"), lists)
    except ValueError as exc:
        return fail(f"bad exception: {exc}")
    try:
        rule.check = compile_condition(rule.condition, macros, lists, fields, compiled)
    except ConditionError as exc:
        if "unknown field" in exc.message:
            rule.skipped = exc.message
            return rule
        return fail(f"condition: {exc}")
    rule.evt_types = evt_types(rule.condition, macros, lists)
    return rule


def load_rules(paths: Iterable, fields: Iterable[str] = FIELDS) -> Ruleset:
    """Load rules files in order; see the module docstring. Never raises for bad content."""
    if isinstance(paths, (str, bytes)) or hasattr(paths, "__fspath__"):
        paths = [paths]
    loader = _Loader()
    for path in paths:
        loader.load_file(path)
    rs = Ruleset()
    rs.notes = loader.notes
    rs.macros = {n: it.data["condition"] for n, it in loader.macros.items()}
    rs.lists = {n: list(it.data["items"]) for n, it in loader.lists.items()}
    fields = frozenset(fields)
    compiled = {}
    # Report broken macros where they are defined (fields we lack are the rules' business).
    for name, it in loader.macros.items():
        try:
            compile_condition(name, rs.macros, rs.lists, fields, compiled)
        except ConditionError as exc:
            if "unknown field" not in exc.message:
                loader.problems.append(Problem(it.file, it.line, _label("macro", name),
                                               exc.message))
    for item in loader.rules.values():
        rule = _build_rule(item, rs.macros, rs.lists, fields, loader.problems, compiled)
        rs.rules.append(rule)
        if rule.skipped is not None:
            rs.skipped.append((rule, rule.skipped))
        elif rule.active:
            rs.active.append(rule)
    rs.problems = loader.problems
    rs._index()
    return rs


# --------------------------------------------------------------------------- evt.type analysis

_FIELD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_RE = re.compile(r"""[^()"'\s=,]+""")
_OP_RE = re.compile(r"==|!=|<=|>=|=|<|>|[A-Za-z_]+")


class _TypeScan:
    """Re-reads a condition that compiled and tells which evt.type values it can match.

    Returns a frozenset, or None for "any". ``a and b`` intersects, ``a or b`` unites; ``not``
    and any check that does not pin evt.type give None.
    """

    def __init__(self, text, macros, lists, depth=0):
        self.text, self.pos, self.macros, self.lists, self.depth = text, 0, macros, lists, depth

    def blank(self):
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self):
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def keyword(self, word):
        self.blank()
        t, i = self.text, self.pos
        after = t[i + len(word):i + len(word) + 1]
        if t.startswith(word, i) and (not after or after.isspace() or after == "("):
            self.pos = i + len(word)
            return True
        return False

    def expr(self):
        result = self.conj()
        while self.keyword("or"):
            other = self.conj()
            result = None if result is None or other is None else result | other
        return result

    def conj(self):
        result = self.neg()
        while self.keyword("and"):
            other = self.neg()
            result = other if result is None else result if other is None else result & other
        return result

    def neg(self):
        if self.keyword("not"):
            self.neg()
            return None
        return self.check()

    def check(self):
        self.blank()
        if self.peek() == "(":
            self.pos += 1
            result = self.expr()
            self.blank()
            if self.peek() != ")":
                raise ValueError("unbalanced")
            self.pos += 1
            return result
        m = _FIELD_RE.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            return self.field_check(m.group(0))
        m = _IDENT_RE.match(self.text, self.pos)
        if not m or m.group(0) not in self.macros or self.depth > 50:
            raise ValueError("not a check")
        self.pos = m.end()
        inner = _TypeScan(self.macros[m.group(0)], self.macros, self.lists, self.depth + 1)
        return inner.whole()

    def whole(self):
        result = self.expr()
        self.blank()
        if self.pos != len(self.text):
            raise ValueError("trailing text")
        return result

    def quoted(self):
        quote, i, out = self.peek(), self.pos + 1, []
        while i < len(self.text):
            c = self.text[i]
            if c == quote:
                self.pos = i + 1
                return "".join(out)
            if c == "\\" and i + 1 < len(self.text):
                out.append(self.text[i + 1] if self.text[i + 1] in "\\\"'" else self.text[i:i + 2])
                i += 2
                continue
            out.append(c)
            i += 1
        raise ValueError("unterminated")

    def value(self):
        self.blank()
        if self.peek() in ("'", '"'):
            return self.quoted()
        m = _BARE_RE.match(self.text, self.pos)
        if not m:
            raise ValueError("no value")
        self.pos = m.end()
        return m.group(0)

    def expand(self, name, seen=()):
        out = []
        for item in self.lists[name]:
            text = str(item)
            if text in self.lists and text not in seen:
                out.extend(self.expand(text, seen + (name,)))
            else:
                out.append(text)
        return out

    def field_check(self, name):
        arg_field = self.peek() == "["
        if arg_field:
            end = self.text.index("]", self.pos)
            self.pos = end + 1
        self.blank()
        m = _OP_RE.match(self.text, self.pos)
        if not m:
            raise ValueError("no operator")
        self.pos = m.end()
        op = m.group(0)
        pins = name == "evt.type" and not arg_field
        if op == "exists":
            return None
        if op in _LIST_COMPS:
            self.blank()
            values = []
            if self.peek() == "(":
                self.pos += 1
                self.blank()
                if self.peek() == ")":
                    self.pos += 1
                else:
                    while True:
                        v = self.value()
                        values.extend(self.expand(v) if v in self.lists else [v])
                        self.blank()
                        c = self.peek()
                        self.pos += 1
                        if c == ")":
                            break
                        if c != ",":
                            raise ValueError("bad list")
            else:
                m = _IDENT_RE.match(self.text, self.pos)
                if not m or m.group(0) not in self.lists:
                    raise ValueError("bad list name")
                self.pos = m.end()
                values = self.expand(m.group(0))
            return frozenset(values) if pins and op == "in" else None
        v = self.value()
        return frozenset([v]) if pins and op in ("=", "==") else None


def evt_types(condition: str, macros: Mapping[str, str] = None,
              lists: Mapping[str, list] = None) -> Optional[frozenset]:
    """The evt.type values ``condition`` can match, or None when it cannot tell (any type)."""
    try:
        return _TypeScan(condition, macros or {}, lists or {}).whole()
    except (ValueError, IndexError, RecursionError):
        return None


# --------------------------------------------------------------------------- output

_OUTPUT_FIELD_RE = re.compile(
    r"%([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+)(?:\[([^\]\s]*)\])?")
_DEFAULT_FIELDS = EventFields()


def _render_value(value) -> str:
    if value is None:
        return "<NA>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_render_value(v) for v in value)
    return str(value)


def _output_value(src, event, m):
    """The value of the ``%field`` or ``%field[arg]`` that m matched, or None."""
    name, arg = m.group(1), m.group(2)
    if arg is not None:
        if arg.isdigit():
            arg = int(arg)
        elif name == "evt.arg":
            name, arg = "evt.arg." + arg, None
    try:
        value = src.get(event, name, arg)
    except Exception:  # a field source that cannot answer renders like a missing value
        value = None
    if value is None and name == "evt.time" and arg is None:
        value = event.get("time")
    return value


def render_output(template: str, event: Mapping[str, Any], source=None) -> str:
    """Falco's output: each ``%field`` or ``%field[arg]`` replaced by the event's value."""
    src = _DEFAULT_FIELDS if source is None else source
    return _OUTPUT_FIELD_RE.sub(lambda m: _render_value(_output_value(src, event, m)), template)


def output_fields(template: str, event: Mapping[str, Any], source=None) -> dict:
    """Falco's output_fields: each field of the template as written (``proc.aname[2]``) and its
    value (None when it has none)."""
    src = _DEFAULT_FIELDS if source is None else source
    return {m.group(0)[1:]: _output_value(src, event, m) for m in _OUTPUT_FIELD_RE.finditer(template)}
