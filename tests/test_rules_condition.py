"""Falco condition language: parsing, semantics and errors of preload.rules.condition."""

import random

import pytest

from preload.rules import FIELDS, ConditionError, EventFields, compile_condition


def match(cond, event, source=None, **kw):
    return compile_condition(cond, **kw)(event, source)


def error_of(cond, **kw):
    with pytest.raises(ConditionError) as info:
        compile_condition(cond, **kw)
    return info.value


OPEN_SHADOW = {
    "evt.type": "openat", "proc.name": "cat", "proc.pid": 42, "proc.ppid": 7,
    "proc.cmdline": "cat /etc/shadow", "fd.name": "/etc/shadow", "fd.num": 3,
    "evt.res": "SUCCESS", "evt.is_open_read": True, "evt.is_open_write": False,
    "user.uid": 0, "evt.arg.flags": "O_RDONLY", "preload.argv": ["cat", "/etc/shadow"],
}


# ----------------------------------------------------------------------------- operators

@pytest.mark.parametrize("cond, expected", [
    ("proc.name = cat", True), ("proc.name = bash", False),
    ("proc.name == cat", True), ("proc.name==bash", False),
    ("proc.name != bash", True), ("proc.name != cat", False),
    ("proc.cmdline contains shadow", True), ("proc.cmdline contains SHADOW", False),
    ("proc.cmdline icontains SHADOW", True), ("proc.cmdline icontains passwd", False),
    ("proc.cmdline bcontains 736861646f77", True), ("proc.cmdline bcontains 00ff", False),
    ("proc.cmdline bstartswith 636174", True), ("proc.cmdline bstartswith 2f", False),
    ("fd.name startswith /etc/", True), ("fd.name startswith /var", False),
    ("fd.name endswith shadow", True), ("fd.name endswith passwd", False),
    ("fd.name glob '/etc/*ad*'", True), ("fd.name glob '/var/*'", False),
    ("fd.name iglob '/ETC/SHAD?W'", True), ("fd.name iglob '/ETC/PASSWD'", False),
    ("fd.name regex 'sha[d]ow$'", True), ("fd.name regex '^shadow'", False),
    ("proc.name in (bash, cat)", True), ("proc.name in (bash, sh)", False),
    ("preload.argv intersects (/etc/shadow, x)", True), ("preload.argv intersects (x, y)", False),
    ("fd.name pmatch (/etc, /var)", True), ("fd.name pmatch (/var, /usr)", False),
    ("fd.name exists", True), ("fd.cip exists", False),
    ("proc.pid > 41", True), ("proc.pid > 42", False),
    ("proc.pid >= 42", True), ("proc.pid >= 43", False),
    ("proc.pid < 43", True), ("proc.pid < 42", False),
    ("proc.pid <= 42", True), ("proc.pid <= 41", False),
])
def test_every_operator_matches_and_rejects(cond, expected):
    assert match(cond, OPEN_SHADOW) is expected


def test_pmatch_matches_only_at_directory_boundaries():
    check = compile_condition("fd.name pmatch (/etc, '/usr/lib/')")
    assert check({"fd.name": "/etc"})
    assert check({"fd.name": "/etc/x"})
    assert check({"fd.name": "/etc/ssh/sshd_config"})
    assert check({"fd.name": "/usr/lib"})
    assert check({"fd.name": "/usr/lib/x.so"})
    assert not check({"fd.name": "/etcx"})
    assert not check({"fd.name": "/etcx/y"})
    assert not check({"fd.name": "/usr/lib64/x.so"})
    assert not check({"fd.name": "/"})


def test_pmatch_root_matches_every_absolute_path():
    check = compile_condition("fd.name pmatch (/)")
    assert check({"fd.name": "/anything/at/all"})
    assert not check({"fd.name": "relative"})


def test_glob_star_crosses_slashes_like_fnmatch_without_pathname():
    check = compile_condition("fd.name glob /etc/*")
    assert check({"fd.name": "/etc/ssh/sshd_config"})
    assert not check({"fd.name": "/var/etc/x"})


def test_glob_matches_the_whole_value_with_classes_and_question_marks():
    check = compile_condition("proc.name glob 'py?hon[23]'")
    assert check({"proc.name": "python3"})
    assert not check({"proc.name": "python3.11"})
    assert not check({"proc.name": "python4"})


def test_iglob_ignores_case_but_glob_does_not():
    assert match("proc.name iglob 'BA*'", {"proc.name": "bash"})
    assert not match("proc.name glob 'BA*'", {"proc.name": "bash"})


def test_regex_searches_anywhere_unless_anchored():
    assert match("proc.cmdline regex 'curl .*\\|'", {"proc.cmdline": "sh -c curl x | sh"})
    assert not match("proc.cmdline regex '^curl'", {"proc.cmdline": "sh -c curl x"})


def test_in_compares_numbers_numerically_and_strings_exactly():
    assert match("fd.sport in (22, 0x50, 443)", {"fd.sport": 80})
    assert not match("fd.sport in (22, 443)", {"fd.sport": 80})
    assert not match("proc.name in (Bash)", {"proc.name": "bash"})


def test_empty_list_never_matches():
    assert not match("proc.name in ()", {"proc.name": "bash"})
    assert match("not proc.name in ()", {"proc.name": "bash"})


def test_in_on_a_list_field_needs_every_element_but_intersects_needs_one():
    event = {"preload.argv": ["ls", "-l"]}
    assert match("preload.argv in (ls, -l, -a)", event)
    assert not match("preload.argv in (ls)", event)
    assert match("preload.argv intersects (ls)", event)


def test_other_operators_on_a_list_field_match_any_element():
    assert match("preload.argv startswith --pass", {"preload.argv": ["x", "--password=1"]})


def test_boolean_fields_compare_with_true_and_false():
    assert match("evt.is_open_read = true and evt.is_open_write = false", OPEN_SHADOW)
    assert not match("evt.is_open_write = true", OPEN_SHADOW)
    assert match("evt.is_open_read in (true)", OPEN_SHADOW)


# ----------------------------------------------------------------------------- values

def test_quoted_values_keep_blanks_and_understand_escapes():
    event = {"proc.cmdline": 'sh -c "echo hi"', "fd.name": "it's"}
    assert match("proc.cmdline = 'sh -c \"echo hi\"'", event)
    assert match('proc.cmdline = "sh -c \\"echo hi\\""', event)
    assert match("fd.name = 'it\\'s'", event)
    assert match("proc.cmdline contains \"\\x22echo\"", event)


def test_list_items_may_be_quoted_bare_or_numeric():
    check = compile_condition("proc.cmdline in ('a b', c, \"d,e\", 3)")
    assert check({"proc.cmdline": "a b"})
    assert check({"proc.cmdline": "d,e"})
    assert check({"proc.cmdline": "3"})
    assert not check({"proc.cmdline": "a"})


def test_bare_values_may_hold_paths_dashes_and_dots():
    assert match("proc.args contains -rf and fd.name = /tmp/x.sh",
                 {"proc.args": "rm -rf /", "fd.name": "/tmp/x.sh"})


def test_numeric_fields_compare_numerically_not_lexically():
    assert match("proc.pid > 9", {"proc.pid": 10})
    assert match("user.uid = 0", {"user.uid": 0})
    assert not match("user.uid = 0", {"user.uid": 1000})
    assert match("fd.lport = 0x1f90", {"fd.lport": 8080})
    assert match("fd.lport < 1024", {"fd.lport": "22"})
    assert match("preload.gap_seconds > 1.5", {"preload.gap_seconds": 2.25})
    assert match("fd.num = -1", {"fd.num": -1})


def test_numbers_given_as_strings_in_numeric_fields_still_compare_as_numbers():
    assert match("user.uid = 0", {"user.uid": "0"})
    assert match("user.uid in (0, 1)", {"user.uid": "1"})


# ----------------------------------------------------------------------------- logic

def test_not_binds_tighter_than_and_which_binds_tighter_than_or():
    event = {"proc.name": "bash", "fd.name": "/etc/passwd"}
    # or is the loosest: a or (b and c)
    assert match("proc.name = bash or proc.name = x and fd.name = y", event)
    # and is looser than not: (not a) and b
    assert not match("not proc.name = bash and fd.name = /etc/passwd", event)
    assert match("not proc.name = zsh and fd.name = /etc/passwd", event)
    # parentheses override
    assert not match("(proc.name = bash or proc.name = x) and fd.name = y", event)
    assert match("not (proc.name = bash and fd.name = y)", event)


def test_not_and_or_accept_parentheses_without_blanks():
    event = {"proc.name": "bash"}
    assert match("not(proc.name = zsh)", event)
    assert match("proc.name = bash and(proc.name = bash)", event)
    assert match("proc.name = x or(proc.name = bash)", event)
    assert match("not not proc.name = bash", event)


def test_long_chains_of_and_and_or_evaluate():
    event = {"proc.name": "e"}
    assert match(" or ".join(f"proc.name = {c}" for c in "abcde"), event)
    assert not match(" and ".join("proc.name = e" for _ in range(4)) + " and proc.name = x",
                     event)


# ----------------------------------------------------------------------------- missing fields

def test_missing_field_fails_every_comparison_even_not_equal():
    for cond in ("fd.name = x", "fd.name != x", "fd.name contains x", "fd.name in (x)",
                 "fd.name pmatch (/)", "fd.name glob *", "proc.pid > 0", "proc.pid != 1",
                 "fd.name exists", "proc.aname intersects (x)"):
        assert not match(cond, {"proc.name": "bash"}), cond


def test_not_of_a_missing_field_comparison_is_true():
    assert match("not fd.name = x", {})
    assert match("not fd.name != x", {})
    assert match("not fd.name exists", {})


def test_none_valued_key_counts_as_missing():
    assert not match("fd.name exists", {"fd.name": None})


# ----------------------------------------------------------------------------- derived fields

CHAIN = {10: [(9, "sshd"), (1, "systemd")], 20: [(19, "bash"), (18, "sshd"), (1, "systemd")]}
SOURCE = EventFields(ancestors=lambda e: [(p, n) for p, n in CHAIN.get(e["proc.pid"], [])])


def test_aname_with_index_names_that_ancestor():
    event = {"proc.pid": 20, "proc.name": "curl"}
    assert match("proc.aname[1] = bash", event, SOURCE)
    assert match("proc.aname[2] = sshd and proc.aname[3] = systemd", event, SOURCE)
    assert not match("proc.aname[1] = sshd", event, SOURCE)
    assert not match("proc.aname[4] exists", event, SOURCE)
    assert match("proc.aname[0] = curl", event, SOURCE)
    assert match("proc.apid[2] = 18 and proc.apid[0] = 20", event, SOURCE)


def test_aname_without_index_matches_any_ancestor():
    event = {"proc.pid": 20, "proc.name": "curl"}
    assert match("proc.aname = sshd", event, SOURCE)
    assert match("proc.aname in (sshd, nginx)", event, SOURCE)
    assert match("proc.aname intersects (nginx, systemd)", event, SOURCE)
    assert not match("proc.aname = curl", event, SOURCE)
    assert not match("proc.aname in (nginx, httpd)", event, SOURCE)
    assert match("proc.apid = 1", event, SOURCE)


def test_aname_is_missing_without_an_ancestors_callable():
    assert not match("proc.aname = sshd", {"proc.pid": 20})
    assert match("not proc.aname exists", {"proc.pid": 20})


def test_pname_falls_back_to_the_first_ancestor():
    assert match("proc.pname = sshd", {"proc.pid": 10}, SOURCE)
    assert match("proc.pname = init", {"proc.pid": 10, "proc.pname": "init"}, SOURCE)


def test_fd_directory_and_filename_derive_from_fd_name():
    event = {"fd.name": "/etc/ssh/sshd_config"}
    assert match("fd.directory = /etc/ssh and fd.filename = sshd_config", event)
    assert match("fd.directory = / and fd.filename = x", {"fd.name": "/x"})
    assert not match("fd.directory exists", {"fd.name": "1.2.3.4:5->6.7.8.9:10"})


def test_rawres_derives_from_res_and_fd():
    assert match("evt.rawres = 3", OPEN_SHADOW)
    assert match("evt.rawres = -2", {"evt.res": "ENOENT"})
    assert match("evt.rawres = 0", {"evt.res": "SUCCESS"})
    assert match("evt.rawres < 0", {"evt.res": "EACCES"})
    assert match("evt.rawres = 0", {"evt.type": "connect", "evt.res": "SUCCESS", "fd.num": 5})
    assert not match("evt.rawres exists", {"evt.res": "NOT_AN_ERRNO"})


def test_evt_arg_is_read_by_dotted_name_or_bracketed_name():
    assert match("evt.arg.flags contains O_RDONLY", OPEN_SHADOW)
    assert match("evt.arg[flags] = O_RDONLY", OPEN_SHADOW)
    assert match("evt.arg.whatever exists", {"evt.arg.whatever": "x"})


def test_positional_evt_arg_is_an_unknown_field_so_its_rule_is_skipped_not_silent():
    with pytest.raises(ConditionError, match=r"unknown field 'evt.arg\[0\]'"):
        compile_condition("evt.arg[0] contains AF_PACKET")


def test_quoted_list_items_are_strings_as_falco_pastes_them():
    lists = {"shells": ['"(systemd)"', "'bash'", "sh"]}
    for name in ("(systemd)", "bash", "sh"):
        assert compile_condition("proc.name in (shells)", lists=lists)({"proc.name": name})
    assert not compile_condition("proc.name in (shells)", lists=lists)({"proc.name": '"(systemd)"'})


def test_custom_field_source_receives_field_and_argument():
    seen = []

    class Source:
        def get(self, event, field, arg):
            seen.append((field, arg))
            return "x"
    assert match("proc.aname[3] = x and proc.name = x", {}, Source())
    assert seen == [("proc.aname", 3), ("proc.name", None)]


# ----------------------------------------------------------------------------- macros and lists

def test_macros_expand_recursively():
    macros = {
        "open_read": "evt.type in (open, openat) and evt.is_open_read = true",
        "shadow": "fd.name = /etc/shadow",
        "read_shadow": "open_read and shadow",
    }
    assert match("read_shadow", OPEN_SHADOW, macros=macros)
    assert not match("not read_shadow", OPEN_SHADOW, macros=macros)
    assert not match("read_shadow", dict(OPEN_SHADOW, **{"fd.name": "/x"}), macros=macros)


def test_macro_is_a_unit_under_and_or_not():
    macros = {"either": "proc.name = a or proc.name = b"}
    # "not either" must negate the whole macro, not just its first half
    assert not match("not either", {"proc.name": "b"}, macros=macros)
    assert not match("either and proc.pid = 1", {"proc.name": "a", "proc.pid": 2},
                     macros=macros)


def test_macro_loop_is_an_error_naming_the_loop():
    err = error_of("x and a", macros={"a": "b", "b": "c", "c": "a", "x": "proc.name=x"})
    assert "macro loop: a -> b -> c -> a" in err.message
    assert err.position == 6


def test_macro_referring_to_itself_is_a_loop():
    err = error_of("a", macros={"a": "proc.name = x or a"})
    assert "macro loop: a -> a" in err.message
    assert err.position == 0


def test_error_inside_a_macro_points_at_the_reference():
    err = error_of("proc.name = x or broken", macros={"broken": "proc.nope = 1"})
    assert err.position == 17
    assert "in macro 'broken' at position 0" in err.message
    assert "unknown field 'proc.nope'" in err.message


def test_lists_expand_inline_nested_and_bare():
    lists = {"shells": ["bash", "sh"], "interpreters": ["shells", "python3"],
             "ports": [22, 2222]}
    assert match("proc.name in (zsh, shells)", {"proc.name": "sh"}, lists=lists)
    assert match("proc.name in interpreters", {"proc.name": "bash"}, lists=lists)
    assert match("proc.name in interpreters", {"proc.name": "python3"}, lists=lists)
    assert not match("proc.name in interpreters", {"proc.name": "perl"}, lists=lists)
    assert match("fd.sport in ports", {"fd.sport": 2222}, lists=lists)
    assert match("fd.name pmatch dirs", {"fd.name": "/etc/x"}, lists={"dirs": ["/etc"]})
    assert match("proc.aname intersects shells", {"proc.pid": 20}, SOURCE, lists=lists)


def test_list_name_outside_a_list_position_is_a_plain_string():
    assert match("proc.name = shells", {"proc.name": "shells"}, lists={"shells": ["bash"]})


def test_list_loop_is_an_error():
    err = error_of("proc.name in a", lists={"a": ["b"], "b": ["a"]})
    assert "list loop: a -> b -> a" in err.message
    assert err.position == 13


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("cond, position, words", [
    ("(proc.name = a", 0, "'(' is never closed"),
    ("proc.name = a and (proc.pid = 1 or (fd.name = x)", 18, "'(' is never closed"),
    ("proc.name = a)", 13, "unexpected ')'"),
    ("()", 1, "unexpected ')'"),
    ("proc.name in (a, b", 13, "list '(' is never closed"),
    ("proc.name like a", 10, "unknown operator 'like'"),
    ("proc.name ~ a", 10, "unknown operator '~'"),
    ("proc.name", 9, "missing operator"),
    ("proc.name =", 11, "missing value"),
    ("proc.name = ", 12, "missing value"),
    ("proc.name = a and fd.name contains", 34, "missing value"),
    ("(proc.name = )", 13, "missing value"),
    ("proc.name in", 12, "missing list"),
    ("proc.name = (a, b)", 12, "expected a single value, found a list"),
    ("proc.nam = a", 0, "unknown field 'proc.nam'"),
    ("proc.name = a or evt.bogus exists", 17, "unknown field 'evt.bogus'"),
    ("proc.name[1] = a", 0, "does not take an argument"),
    ("proc.aname[x] = a", 11, "non-negative index"),
    ("proc.aname[1 = a", 12, "expected ']'"),
    ("nosuchmacro", 0, "undefined macro 'nosuchmacro'"),
    ("proc.name = a and nosuchmacro", 18, "undefined macro 'nosuchmacro'"),
    ("proc.name in nosuchlist", 13, "undefined list 'nosuchlist'"),
    ("proc.name = 'abc", 12, "unterminated quoted string"),
    ("proc.pid = abc", 11, "is numeric"),
    ("proc.pid in (1, x)", 16, "is numeric"),
    ("proc.name > abc", 12, "needs a number"),
    ("evt.is_open_read = yes", 19, "is boolean"),
    ("proc.name regex '('", 16, "invalid regex pattern"),
    ("proc.name bcontains xyz", 20, "needs hex bytes"),
    ("proc.name = a proc.pid = 1", 14, "expected 'and', 'or'"),
    ("proc.name = a and", 17, "found end of condition"),
    ("", 0, "empty condition"),
    ("   ", 3, "empty condition"),
    ("proc.name containsx", 10, "unknown operator 'containsx'"),
    ("proc.name contains(x)", 18, "expected a blank after 'contains'"),
    ("proc.name in (a b)", 16, "expected ',' or ')'"),
    ("= a", 0, "expected a field check"),
])
def test_errors_report_message_and_position(cond, position, words):
    err = error_of(cond)
    assert words in err.message
    assert err.position == position
    assert isinstance(err, ValueError)


def test_restricted_field_set_rejects_fields_outside_it():
    fields = {"proc.name", "evt.arg.*"}
    assert match("proc.name = a and evt.arg.x exists", {"proc.name": "a", "evt.arg.x": 1},
                 fields=fields)
    err = error_of("proc.name = a and fd.name = b", fields=fields)
    assert err.message == "unknown field 'fd.name'" and err.position == 18


def test_default_fields_cover_the_documented_event_log():
    for name in ("evt.type", "proc.exepath", "fd.typechar", "fd.l4proto", "preload.seq",
                 "preload.argv", "user.name", "container.id", "proc.tty", "proc.duration"):
        assert name in FIELDS


def test_garbage_conditions_raise_only_condition_errors():
    for cond in ("(((", ")))", "and", "not", "or or", "proc.name in ((a))", "'x'",
                 "proc.name = a or", "proc.aname[", "proc.aname[]", "evt.arg['x' = 1",
                 "a.b.c = 1", "proc.name in (,)", "\\", "proc.name glob", "x[1]",
                 "(" * 5000 + "proc.name = a" + ")" * 5000):
        with pytest.raises(ConditionError):
            compile_condition(cond)


# ----------------------------------------------------------------------------- realistic rule

SENSITIVE_MACROS = {
    "open_read": "(evt.type in (open, openat, openat2) and evt.is_open_read=true "
                 "and fd.typechar='f' and fd.num>=0)",
    "sensitive_files": "(fd.name startswith /etc and (fd.name in (sensitive_file_names) "
                       "or fd.directory in (/etc/sudoers.d, /etc/pam.d)))",
    "proc_name_exists": "(proc.name!=\"<NA>\" and proc.name!=\"\" and proc.name exists)",
    "user_known_read_sensitive_files_activities": "(never_true)",
    "never_true": "(evt.num=0)",
}
SENSITIVE_LISTS = {
    "sensitive_file_names": ["/etc/shadow", "/etc/sudoers", "/etc/pam.conf",
                             "/etc/security/pwquality.conf"],
    "user_mgmt_binaries": ["login_binaries", "passwd_binaries", "shadowutils_binaries"],
    "login_binaries": ["login", "systemd", "systemd-logind", "su", "nologin", "sshd"],
    "passwd_binaries": ["shadowconfig", "grpck", "pwunconv", "passwd", "chpasswd"],
    "shadowutils_binaries": ["chage", "gpasswd", "useradd", "usermod", "vipw"],
}
SENSITIVE_CONDITION = """
    open_read
    and sensitive_files
    and proc_name_exists
    and not proc.name in (user_mgmt_binaries, iptables, ps, lsb_release, check-new-relea,
                          dumpe2fs, accounts-daemon, sshd, vsftpd, systemd, mysql_install_d)
    and not proc.aname[2] in (sshd, systemd)
    and not proc.cmdline contains "/usr/bin/mandb"
    and not user_known_read_sensitive_files_activities
"""


@pytest.fixture
def read_sensitive():
    return compile_condition(SENSITIVE_CONDITION, macros=SENSITIVE_MACROS, lists=SENSITIVE_LISTS,
                             fields=FIELDS | {"evt.num"})


def _open(**over):
    event = {"evt.type": "openat", "evt.is_open_read": True, "fd.typechar": "f", "fd.num": 3,
             "fd.name": "/etc/shadow", "proc.name": "cat", "proc.pid": 20,
             "proc.cmdline": "cat /etc/shadow", "evt.res": "SUCCESS"}
    event.update(over)
    return event


def test_read_sensitive_file_rule_fires_for_an_untrusted_reader(read_sensitive):
    source = EventFields(ancestors=lambda e: [(19, "bash"), (18, "containerd-shim")])
    assert read_sensitive(_open(), source)
    assert read_sensitive(_open(**{"fd.name": "/etc/pam.d/common-auth"}), source)


def test_read_sensitive_file_rule_stays_quiet_for_trusted_or_harmless_opens(read_sensitive):
    source = EventFields(ancestors=lambda e: [(19, "bash"), (18, "containerd-shim")])
    assert not read_sensitive(_open(**{"proc.name": "passwd"}), source)       # nested list
    assert not read_sensitive(_open(**{"proc.name": "sshd"}), source)         # list + inline
    assert not read_sensitive(_open(**{"proc.name": "dumpe2fs"}), source)     # inline item
    assert not read_sensitive(_open(**{"fd.name": "/etc/hosts"}), source)     # not sensitive
    assert not read_sensitive(_open(**{"fd.name": "/etc/shadowx"}), source)
    assert not read_sensitive(_open(**{"evt.is_open_read": False}), source)   # a write
    assert not read_sensitive(_open(**{"fd.num": -1, "evt.res": "EACCES"}), source)
    assert not read_sensitive(_open(**{"evt.type": "execve"}), source)
    assert not read_sensitive(_open(**{"proc.name": ""}), source)
    assert not read_sensitive(_open(**{"proc.cmdline": "/usr/bin/mandb -q"}), source)
    started_by_sshd = EventFields(ancestors=lambda e: [(19, "bash"), (18, "sshd")])
    assert not read_sensitive(_open(), started_by_sshd)


def test_compiled_condition_is_reusable_and_cheap_to_call(read_sensitive):
    source = EventFields(ancestors=lambda e: [(19, "bash")])
    events = [_open(), _open(**{"proc.name": "passwd"})] * 500
    assert sum(read_sensitive(e, source) for e in events) == 500


def test_generated_conditions_compile_to_condition_errors_or_checks_that_never_raise():
    rng = random.Random(7)
    fields = ["proc.name", "fd.name", "proc.aname[2]", "proc.aname", "evt.arg[0]", "evt.arg.x",
              "proc.pid", "evt.is_open_read", "preload.argv", "preload.stats", "evt.rawres"]
    ops = ["=", "!=", "<", ">=", "contains", "icontains", "bcontains", "startswith", "glob",
           "iglob", "regex", "in", "intersects", "pmatch", "exists"]
    values = ["a", "'a b'", "1", "0x10", "true", "/etc", "*", "ff", "(a, 1, l)", "l", "()",
              "'[a'", ""]

    def gen(depth=0):
        r = rng.random()
        if depth < 3 and r < 0.3:
            return f"{gen(depth + 1)} {rng.choice(['and', 'or'])} {gen(depth + 1)}"
        if depth < 3 and r < 0.4:
            return f"not {gen(depth + 1)}"
        if depth < 3 and r < 0.5:
            return rng.choice(["(", ""]) + gen(depth + 1) + rng.choice([")", ""])
        if r < 0.55:
            return rng.choice(["m", "undefined_macro"])
        op = rng.choice(ops)
        return f"{rng.choice(fields)} {op}" + ("" if op == "exists" else " " + rng.choice(values))

    events = [{}, {"proc.name": "a b", "fd.name": "/etc/x", "proc.pid": 3,
                   "evt.is_open_read": True, "evt.arg.x": [1, 2], "preload.argv": ["a", None, 3],
                   "preload.stats": {"received": 1}, "evt.res": "SUCCESS"}]
    source = EventFields(ancestors=lambda e: [(1, "a"), (2, "b")])
    compiled = 0
    for _ in range(3000):
        text = gen()
        try:
            check = compile_condition(text, macros={"m": "proc.name=a or fd.name exists"},
                                      lists={"l": ["a", "l2"], "l2": [1, "/etc"]})
        except ConditionError:
            continue
        compiled += 1
        for event in events:
            assert check(event, source) in (True, False), text
    assert compiled > 500
