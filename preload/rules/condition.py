"""Falco's condition language, compiled to Python closures.

``compile_condition(text)`` parses a condition written in Falco's filter grammar (the libsinsp
filter language) once and returns ``check(event, source=None) -> bool``; evaluating it is a chain
of closure calls with every constant (regexes, glob patterns, sets of values) prepared up front.

Grammar (precedence ``not`` > ``and`` > ``or``)::

    expr      := and_expr ('or' and_expr)*
    and_expr  := not_expr ('and' not_expr)*
    not_expr  := 'not' not_expr | check
    check     := '(' expr ')' | MACRO | field 'exists' | field OP value | field LISTOP list
    field     := NAME ('.' NAME)+ ['[' arg ']']          e.g. proc.aname[2], evt.arg[flags]
    value     := "quoted" | 'quoted' | bare              bare: no blanks, ( ) , = or quotes
    list      := '(' [item (',' item)*] ')' | LIST       items that name a list are expanded

Operators: ``= == != < <= > >= contains icontains bcontains startswith bstartswith endswith glob
iglob regex`` take one value; ``in intersects pmatch`` take a list; ``exists`` takes none.

Semantics, chosen to follow Falco/libsinsp:

* A field whose value is missing (the source returns ``None``) makes every comparison false,
  ``!=`` included; only ``exists`` tells it apart, and ``not <comparison>`` is then true.
* Numbers: if the field's value is a number (or the field is one of NUMERIC_FIELDS) the value is
  compared numerically; a non-numeric value for a numeric field is a compile error, as is a
  non-number after ``< <= > >=``. Booleans (``evt.is_open_read``) compare with ``true``/``false``.
* List-valued fields (``proc.aname``/``proc.apid`` without an index, ``preload.argv``):
  ``intersects`` is true when any element is in the list; ``in`` is true when any element is in
  the list for the ancestor fields (Falco's "any ancestor" rule) and when every element is for
  other list fields; every other operator is true when it holds for any element.
* ``glob``: fnmatch without FNM_PATHNAME (``*`` also matches ``/``), ``iglob`` ignores case;
  a backslash is an ordinary character. ``pmatch``: the value equals one of the paths or lies
  below one of them (``/etc`` matches ``/etc`` and ``/etc/x``, not ``/etcx``).
* ``regex``: Python ``re.search`` (unanchored), not RE2; anchor with ``^``/``$`` when needed.
* ``bcontains``/``bstartswith`` take hex bytes (``bcontains 7f454c46``).
* ``proc.aname[0]``/``proc.apid[0]`` are the process itself, ``[1]`` its parent and so on.
* Macros are expanded where they are referenced (recursively; a loop is an error); lists are
  expanded inline in ``in``/``intersects``/``pmatch`` lists and may contain other lists.
* Not supported: field transformers (``tolower(...)``, ``val(...)``), field-to-field comparisons.
"""

from __future__ import annotations

import errno
import re
from fnmatch import translate as _glob_to_regex
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol

__all__ = [
    "ConditionError", "FieldSource", "EventFields", "compile_condition", "FIELDS",
    "NUMERIC_FIELDS", "BOOL_FIELDS", "OPERATORS",
]


class ConditionError(ValueError):
    """A condition that cannot be compiled. ``position`` is a 0-based offset in its text."""

    def __init__(self, message: str, position: int = 0):
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position


class FieldSource(Protocol):
    def get(self, event: Mapping[str, Any], field: str, arg: Any) -> Any:
        """The value of ``field`` (with ``arg``: None, an int index or a string) or None."""


# Every field docs/events.md names, plus the derived ones EventFields computes.
FIELDS = frozenset({
    "time", "evt.type", "evt.source", "evt.dir", "evt.res", "evt.rawres", "evt.count",
    "evt.is_open_read", "evt.is_open_write", "evt.arg", "evt.arg.*",
    "proc.pid", "proc.ppid", "proc.name", "proc.exepath", "proc.cmdline", "proc.args",
    "proc.cwd", "proc.pname", "proc.pexepath", "proc.pcmdline", "proc.aname", "proc.apid",
    "proc.tty", "proc.duration",
    "user.uid", "user.name", "container.id",
    "fd.name", "fd.directory", "fd.filename", "fd.num", "fd.typechar", "fd.type", "fd.l4proto",
    "fd.lip", "fd.lport", "fd.rip", "fd.rport", "fd.cip", "fd.cport", "fd.sip", "fd.sport",
    "fs.path.name", "fs.path.source", "fs.path.target",
    "preload.stream", "preload.seq", "preload.argv", "preload.attach", "preload.api",
    "preload.truncated", "preload.failed_sends", "preload.end_reason", "preload.reason",
    "preload.binary", "preload.state", "preload.gap_seconds", "preload.stats",
})

NUMERIC_FIELDS = frozenset({
    "evt.rawres", "evt.count", "proc.pid", "proc.ppid", "proc.apid", "proc.tty",
    "proc.duration", "user.uid", "fd.num", "fd.lport", "fd.rport", "fd.cport", "fd.sport",
    "preload.seq", "preload.failed_sends", "preload.gap_seconds",
})

BOOL_FIELDS = frozenset({"evt.is_open_read", "evt.is_open_write", "preload.truncated"})

# Fields that take an argument in brackets, and whether it must be an integer index.
_ARG_FIELDS = {"proc.aname": True, "proc.apid": True, "evt.arg": False}
# List-valued fields for which `in` means "any element" (Falco's any-ancestor rule).
_ANY_FIELDS = frozenset({"proc.aname", "proc.apid"})
# Fields whose value may be a list (the others are always scalars).
_LIST_VALUED = _ANY_FIELDS | {"preload.argv", "preload.stats", "evt.arg"}

_SCALAR_OPS = ("==", "=", "!=", "<=", "<", ">=", ">")
_WORD_SCALAR_OPS = frozenset({"contains", "icontains", "bcontains", "startswith", "bstartswith",
                              "endswith", "glob", "iglob", "regex"})
_LIST_OPS = frozenset({"in", "intersects", "pmatch"})
OPERATORS = frozenset(_SCALAR_OPS) | _WORD_SCALAR_OPS | _LIST_OPS | {"exists"}

_FIELD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_BARE_RE = re.compile(r"""[^()"'\s=,]+""")
_FIELD_ARG_RE = re.compile(r"""[^\[\]"'\s]+""")
_NUMBER_RE = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", '"': '"',
            "'": "'", "/": "/"}

Check = Callable[[Mapping[str, Any], FieldSource], bool]


def _number(text: str):
    """The number a value spells, or None."""
    if not _NUMBER_RE.fullmatch(text):
        return None
    body = text.lstrip("+-")
    if body[:2] in ("0x", "0X"):
        n = int(body, 16)
        return -n if text.startswith("-") else n
    try:
        return int(text)
    except ValueError:
        return float(text)


# --------------------------------------------------------------------------- field values

class EventFields:
    """Reads fields from an event dict; derives the ones docs/events.md does not store.

    ``ancestors(event) -> [(pid, name), ...]`` lists the parent first, then its parent, ...;
    it is called only for ``proc.aname``/``proc.apid`` (and ``proc.pname`` when absent).
    ``evt.arg[name]`` reads ``evt.arg.name``; positional ``evt.arg[N]`` is not available (None).
    """

    def __init__(self, ancestors: Optional[Callable[[Mapping[str, Any]], list]] = None):
        self._ancestors = ancestors

    def _chain(self, event):
        if self._ancestors is None:
            return None
        return self._ancestors(event) or []

    def get(self, event, field, arg=None):
        if arg is None:
            value = event.get(field)
            if value is not None:
                return value
            derive = _DERIVED.get(field)
            return derive(self, event) if derive is not None else None
        if field == "evt.arg":
            return None if isinstance(arg, int) else event.get("evt.arg." + arg)
        if field in ("proc.aname", "proc.apid"):
            if arg == 0:
                return event.get("proc.name" if field == "proc.aname" else "proc.pid")
            chain = self._chain(event)
            if not chain or arg > len(chain):
                return None
            return chain[arg - 1][1 if field == "proc.aname" else 0]
        return None

    def _aname(self, event):
        chain = self._chain(event)
        return None if chain is None else [name for _, name in chain]

    def _apid(self, event):
        chain = self._chain(event)
        return None if chain is None else [pid for pid, _ in chain]

    def _pname(self, event):
        chain = self._chain(event)
        return chain[0][1] if chain else None

    def _directory(self, event):
        name = event.get("fd.name")
        if not isinstance(name, str) or not name.startswith("/"):
            return None
        return name.rsplit("/", 1)[0] or "/"

    def _filename(self, event):
        name = event.get("fd.name")
        if not isinstance(name, str) or not name.startswith("/"):
            return None
        return name.rsplit("/", 1)[1]

    def _rawres(self, event):
        res = event.get("evt.res")
        if res is None:
            return None
        if isinstance(res, int):
            return res
        if res == "SUCCESS":  # the syscalls that return a new descriptor return fd.num
            fd = event.get("fd.num")
            if event.get("evt.type") in _FD_RETURNING and isinstance(fd, int) and fd >= 0:
                return fd
            return 0
        code = getattr(errno, str(res), None)
        return -code if isinstance(code, int) else None


_FD_RETURNING = frozenset({"open", "openat", "openat2", "creat", "accept", "accept4"})

_DERIVED = {
    "proc.aname": EventFields._aname,
    "proc.apid": EventFields._apid,
    "proc.pname": EventFields._pname,
    "fd.directory": EventFields._directory,
    "fd.filename": EventFields._filename,
    "evt.rawres": EventFields._rawres,
}

_DEFAULT_SOURCE = EventFields()


# --------------------------------------------------------------------------- parser

class _Parser:
    def __init__(self, text, macros, lists, fields, expanding, compiled):
        self.text = text
        self.pos = 0
        self.macros = macros
        self.lists = lists
        self.fields = fields
        self.expanding = expanding  # macro names being expanded, outermost first
        self.compiled = compiled  # (name, body) -> the macro's check, for these macros, lists, fields

    # -- lexing helpers
    def error(self, message, position=None):
        raise ConditionError(message, self.pos if position is None else position)

    def blank(self):
        text, n, i = self.text, len(self.text), self.pos
        while i < n and text[i].isspace():
            i += 1
        self.pos = i

    def peek(self):
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def keyword(self, word):
        """Consume ``word`` if it stands alone here (followed by a blank, '(' or the end)."""
        text, i = self.text, self.pos
        if not text.startswith(word, i):
            return False
        after = text[i + len(word):i + len(word) + 1]
        if after and not (after.isspace() or after == "("):
            return False
        self.pos = i + len(word)
        return True

    def describe_here(self):
        if self.pos >= len(self.text):
            return "end of condition"
        m = _WORD_RE.match(self.text, self.pos)
        return repr(m.group(0) if m else self.text[self.pos])

    # -- grammar
    def parse(self):
        self.blank()
        if self.pos >= len(self.text):
            self.error("empty condition")
        check = self.parse_or()
        self.blank()
        if self.pos < len(self.text):
            if self.peek() == ")":
                self.error("unbalanced parentheses: unexpected ')'")
            self.error(f"expected 'and', 'or' or the end of the condition, found "
                       f"{self.describe_here()}")
        return check

    def parse_or(self):
        parts = [self.parse_and()]
        self.blank()
        while self.keyword("or"):
            parts.append(self.parse_and())
            self.blank()
        return parts[0] if len(parts) == 1 else _any_of(parts)

    def parse_and(self):
        parts = [self.parse_not()]
        self.blank()
        while self.keyword("and"):
            parts.append(self.parse_not())
            self.blank()
        return parts[0] if len(parts) == 1 else _all_of(parts)

    def parse_not(self):
        self.blank()
        if self.keyword("not"):
            inner = self.parse_not()
            return lambda e, s: not inner(e, s)
        return self.parse_check()

    def parse_check(self):
        self.blank()
        start = self.pos
        if self.peek() == "(":
            self.pos += 1
            inner = self.parse_or()
            self.blank()
            if self.peek() != ")":
                if self.pos >= len(self.text):
                    self.error("unbalanced parentheses: '(' is never closed", start)
                self.error(f"expected ')' or 'and'/'or', found {self.describe_here()}")
            self.pos += 1
            return inner
        if self.peek() == ")":
            self.error("unbalanced parentheses: unexpected ')'")
        if self.pos >= len(self.text):
            self.error("expected a field check, a macro or '(', found end of condition")
        m = _FIELD_RE.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            return self.parse_field_check(m.group(0), start)
        m = _IDENT_RE.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            if self.peek() in ("[", "."):
                self.error(f"malformed field name {self.text[start:self.pos + 1]!r}", start)
            return self.expand_macro(m.group(0), start)
        self.error(f"expected a field check, a macro or '(', found {self.describe_here()}")

    def expand_macro(self, name, start):
        if name not in self.macros:
            self.error(f"undefined macro {name!r}", start)
        if name in self.expanding:
            loop = " -> ".join(self.expanding[self.expanding.index(name):] + [name])
            self.error(f"macro loop: {loop}", start)
        body = self.macros[name]
        if not isinstance(body, str):
            self.error(f"macro {name!r} is not a condition string", start)
        key = (name, body)
        if key in self.compiled:  # it compiled, so it reaches no macro that reaches it: no loop here
            return self.compiled[key]
        inner = _Parser(body, self.macros, self.lists, self.fields, self.expanding + [name], self.compiled)
        try:
            check = self.compiled[key] = _remembered(key, inner.parse())
            return check
        except ConditionError as exc:
            if exc.message.startswith(("macro loop", "in macro")):
                raise ConditionError(exc.message, start) from None
            raise ConditionError(f"in macro {name!r} at position {exc.position}: {exc.message}",
                                 start) from None

    def parse_field_check(self, name, start):
        arg = None
        if self.peek() == "[":
            arg_start = self.pos + 1
            self.pos += 1
            if self.peek() in ("'", '"'):
                arg = self.quoted()
            else:
                m = _FIELD_ARG_RE.match(self.text, self.pos)
                if not m:
                    self.error("expected a field argument inside '[ ]'")
                arg = m.group(0)
                self.pos = m.end()
            if self.peek() != "]":
                self.error("expected ']' closing the field argument")
            self.pos += 1
            if name not in _ARG_FIELDS:
                self.error(f"field {name!r} does not take an argument", start)
            if name == "evt.arg" and _number(arg) is not None:
                # skipped, not a silent never-match: events name their arguments, not number them
                self.error(f"unknown field 'evt.arg[{arg}]' (arguments are known by name: "
                           f"evt.arg.NAME)", start)
            if _ARG_FIELDS[name] or _number(arg) is not None:
                n = _number(arg)
                if not isinstance(n, int) or n < 0:
                    self.error(f"field {name!r} needs a non-negative index, not {arg!r}",
                               arg_start)
                arg = n
            elif name == "evt.arg":  # evt.arg[flags] is evt.arg.flags
                name, arg = "evt.arg." + arg, None
        self.check_known(name, arg, start)
        self.blank()
        op_pos = self.pos
        op = self.operator()
        if op == "exists":
            return _exists(name, arg)
        self.blank()
        if op in _LIST_OPS:
            values = self.list_value()
        else:
            values = self.scalar_value()
        return _compare(name, arg, op, values, self, op_pos)

    def check_known(self, name, arg, start):
        fields = self.fields
        if name in fields:
            return
        if name.startswith("evt.arg.") and ("evt.arg.*" in fields or "evt.arg" in fields):
            return
        for entry in fields:
            if entry.endswith(".*") and name.startswith(entry[:-1]):
                return
        self.error(f"unknown field {name!r}", start)

    def operator(self):
        text, i = self.text, self.pos
        for op in ("==", "!=", "<=", ">=", "=", "<", ">"):
            if text.startswith(op, i):
                self.pos = i + len(op)
                return op
        m = _WORD_RE.match(text, i)
        if not m:
            if i >= len(text):
                self.error("missing operator after the field, found end of condition")
            self.error(f"unknown operator {text[i]!r}")
        word = m.group(0)
        if word not in OPERATORS:
            self.error(f"unknown operator {word!r}")
        self.pos = m.end()
        after = self.peek()
        if word in _LIST_OPS:
            if after and not (after.isspace() or after == "("):
                self.error(f"expected a blank or '(' after {word!r}")
        elif after and not after.isspace() and not (word == "exists" and after == ")"):
            self.error(f"expected a blank after {word!r}")
        return word

    def quoted(self):
        text, start = self.text, self.pos
        quote = text[start]
        out = []
        i = start + 1
        n = len(text)
        while i < n:
            c = text[i]
            if c == quote:
                self.pos = i + 1
                return "".join(out)
            if c == "\\" and i + 1 < n:
                nxt = text[i + 1]
                if nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
                    out.append(chr(int(text[i + 2:i + 4], 16)))
                    i += 4
                    continue
                out.append(_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            out.append(c)
            i += 1
        self.error("unterminated quoted string", start)

    def scalar_value(self):
        """One value: [(text, position)]."""
        pos = self.pos
        c = self.peek()
        if c in ("'", '"'):
            return [(self.quoted(), pos)]
        m = _BARE_RE.match(self.text, pos)
        if not m:
            if c == "(":
                self.error("expected a single value, found a list")
            self.error("missing value after the operator")
        self.pos = m.end()
        return [(m.group(0), pos)]

    def list_value(self):
        """A list: [(text, position)], named lists expanded."""
        pos = self.pos
        if self.peek() != "(":
            m = _IDENT_RE.match(self.text, pos)
            if not m:
                self.error("missing list after the operator: expected '(' or a list name")
            self.pos = m.end()
            if m.group(0) not in self.lists:
                self.error(f"undefined list {m.group(0)!r}", pos)
            return [(v, pos) for v in self.expand_list(m.group(0), pos, [])]
        self.pos += 1
        items = []
        self.blank()
        if self.peek() == ")":
            self.pos += 1
            return items
        while True:
            self.blank()
            item_pos = self.pos
            c = self.peek()
            if c in ("'", '"'):
                items.append((self.quoted(), item_pos))
            else:
                m = _BARE_RE.match(self.text, item_pos)
                if not m:
                    if self.pos >= len(self.text):
                        self.error("unbalanced parentheses: list '(' is never closed", pos)
                    self.error("missing value in list")
                self.pos = m.end()
                word = m.group(0)
                if word in self.lists:
                    items.extend((v, item_pos) for v in self.expand_list(word, item_pos, []))
                else:
                    items.append((word, item_pos))
            self.blank()
            c = self.peek()
            if c == ",":
                self.pos += 1
                continue
            if c == ")":
                self.pos += 1
                return items
            if not c:
                self.error("unbalanced parentheses: list '(' is never closed", pos)
            self.error(f"expected ',' or ')' in list, found {self.describe_here()}")

    def expand_list(self, name, pos, seen):
        if name in seen:
            self.error("list loop: " + " -> ".join(seen + [name]), pos)
        items = self.lists[name]
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            self.error(f"list {name!r} is not a list of values", pos)
        out = []
        for item in items:
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            if text in self.lists:
                out.extend(self.expand_list(text, pos, seen + [name]))
            elif len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
                out.append(text[1:-1])  # Falco pastes items into the condition: quotes quote
            else:
                out.append(text)
        return out


def _remembered(key, check):
    """A macro's result, computed once per event when the field source keeps a `memo` dict for
    the event (the daemon's does: many rules of one ruleset share open_read, spawned_process…)."""
    def macro(e, s):
        memo = getattr(s, "memo", None)
        if memo is None:
            return check(e, s)
        r = memo.get(key)
        if r is None:
            r = memo[key] = bool(check(e, s))
        return r
    return macro


def _all_of(parts):
    if len(parts) == 2:
        a, b = parts
        return lambda e, s: a(e, s) and b(e, s)
    parts = tuple(parts)

    def every(e, s):  # a loop: a generator in all() costs more than the checks it runs
        for p in parts:
            if not p(e, s):
                return False
        return True
    return every


def _any_of(parts):
    if len(parts) == 2:
        a, b = parts
        return lambda e, s: a(e, s) or b(e, s)
    parts = tuple(parts)

    def some(e, s):
        for p in parts:
            if p(e, s):
                return True
        return False
    return some


def _exists(field, arg):
    def check(e, s):
        v = s.get(e, field, arg)
        return v is not None and not (isinstance(v, (list, tuple)) and not v)
    return check


# --------------------------------------------------------------------------- comparisons

_SEQ = (list, tuple, set, frozenset)


def _to_text(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _to_number(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        return _number(v.strip())
    return None


def _scalar_predicate(op, text, field, parser, pos):
    """A test on one non-None, non-sequence value."""
    numeric_field = field in NUMERIC_FIELDS
    num = _number(text)
    if op in ("<", "<=", ">", ">=", "=", "==", "!="):
        if field in BOOL_FIELDS and text not in ("true", "false"):
            parser.error(f"field {field!r} is boolean: expected true or false, not {text!r}", pos)
        if numeric_field and num is None:
            parser.error(f"field {field!r} is numeric: {text!r} is not a number", pos)
        if op in ("<", "<=", ">", ">=") and num is None:
            parser.error(f"operator {op!r} needs a number, not {text!r}", pos)
    if op in ("=", "==", "!="):
        boolean = {"true": True, "false": False}.get(text)

        def eq(v):
            if isinstance(v, str):
                if num is not None and numeric_field:
                    return _to_number(v) == num
                return v == text
            if isinstance(v, bool):
                return v is boolean
            if isinstance(v, (int, float)):
                return num is not None and v == num
            return _to_text(v) == text
        if op == "!=":
            return lambda v: not eq(v)
        return eq
    if op in ("<", "<=", ">", ">="):
        cmp = {"<": lambda a: a < num, "<=": lambda a: a <= num,
               ">": lambda a: a > num, ">=": lambda a: a >= num}[op]

        def order(v):
            n = _to_number(v)
            return n is not None and cmp(n)
        return order
    if op == "contains":
        return lambda v: text in _to_text(v)
    if op == "icontains":
        low = text.lower()
        return lambda v: low in _to_text(v).lower()
    if op == "startswith":
        return lambda v: _to_text(v).startswith(text)
    if op == "endswith":
        return lambda v: _to_text(v).endswith(text)
    if op in ("bcontains", "bstartswith"):
        try:
            needle = bytes.fromhex(text)
        except ValueError:
            parser.error(f"operator {op!r} needs hex bytes, not {text!r}", pos)

        def as_bytes(v):
            if isinstance(v, (bytes, bytearray)):
                return bytes(v)
            return _to_text(v).encode("utf-8", "surrogateescape")
        if op == "bcontains":
            return lambda v: needle in as_bytes(v)
        return lambda v: as_bytes(v).startswith(needle)
    if op in ("glob", "iglob", "regex"):
        flags = re.IGNORECASE if op == "iglob" else 0
        source = text if op == "regex" else _glob_to_regex(text)
        try:
            rx = re.compile(source, flags | (re.DOTALL if op != "regex" else 0))
        except re.error as exc:
            parser.error(f"invalid {op} pattern {text!r}: {exc}", pos)
        if op == "regex":
            search = rx.search
            return lambda v: search(_to_text(v)) is not None
        match = rx.match
        return lambda v: match(_to_text(v)) is not None
    raise AssertionError(op)  # pragma: no cover - operator() only returns known operators


def _list_predicate(op, items, field, parser):
    texts = [t for t, _ in items]
    if op == "pmatch":
        prefixes = frozenset(t.rstrip("/") or "/" for t in texts)
        root = "/" in prefixes

        def under(v):
            p = _to_text(v)
            if p in prefixes or (root and p.startswith("/")):
                return True
            i = p.find("/", 1)
            while i != -1:
                if p[:i] in prefixes:
                    return True
                i = p.find("/", i + 1)
            return False
        return under
    if field in NUMERIC_FIELDS:
        for t, pos in items:
            if _number(t) is None:
                parser.error(f"field {field!r} is numeric: {t!r} is not a number", pos)
    strings = frozenset(texts)
    numbers = frozenset(n for n in map(_number, texts) if n is not None)

    def member(v):
        if isinstance(v, str):
            return v in strings or (bool(numbers) and field in NUMERIC_FIELDS
                                    and _to_number(v) in numbers)
        if isinstance(v, bool):
            return ("true" if v else "false") in strings
        if isinstance(v, (int, float)):
            return v in numbers
        return _to_text(v) in strings
    return member


def _compare(field, arg, op, items, parser, op_pos):
    if op in _LIST_OPS:
        one = _list_predicate(op, items, field, parser)
    else:
        (text, pos), = items
        one = _scalar_predicate(op, text, field, parser, pos)
    every = op == "in" and field not in _ANY_FIELDS

    def test(v):
        if v is None:
            return False
        if isinstance(v, _SEQ):
            if every:
                return bool(v) and all(x is not None and one(x) for x in v)
            return any(x is not None and one(x) for x in v)
        return one(v)


    if arg is not None:
        def check(e, s):
            return test(s.get(e, field, arg))
        return check

    if field in FIELDS and field not in _LIST_VALUED:
        def check_scalar(e, s):  # the hot path: one call per comparison, then the operator's
            v = e.get(field)  # most fields are in the event itself: ask the source for the rest
            if v is None:
                v = s.get(e, field, None)
                if v is None:
                    return False
            return one(v)
        return check_scalar

    def check_plain(e, s):
        v = e.get(field)
        return test(v if v is not None else s.get(e, field, None))
    return check_plain


# --------------------------------------------------------------------------- entry point

def compile_condition(text: str, macros: Optional[Mapping[str, str]] = None,
                      lists: Optional[Mapping[str, Iterable]] = None,
                      fields: Optional[Iterable[str]] = None, compiled: Optional[dict] = None):
    """Compile a Falco condition to ``check(event, source=None) -> bool``.

    ``source`` is a FieldSource; None means ``EventFields()`` without ancestors.
    ``compiled``: a dict shared by the calls that pass the same macros, lists and fields (a ruleset's
    load), so that each macro is compiled once.
    Raises ConditionError (with a position in ``text``) for anything it cannot compile.
    """
    if not isinstance(text, str):
        raise ConditionError("condition must be a string", 0)
    parser = _Parser(text, dict(macros or {}), dict(lists or {}),
                     FIELDS if fields is None else frozenset(fields), [],
                     {} if compiled is None else compiled)
    try:
        inner = parser.parse()
    except RecursionError:
        raise ConditionError("condition nested too deeply", parser.pos) from None

    def check(event, source=None):
        return bool(inner(event, _DEFAULT_SOURCE if source is None else source))
    check.condition = text
    return check
