"""A Falco-compatible rules engine: conditions (Falco's filter language) compiled to closures, and
Falco rules files (rules, macros, lists, exceptions, overrides) loaded into an indexed ruleset."""

from .condition import (BOOL_FIELDS, FIELDS, NUMERIC_FIELDS, OPERATORS, ConditionError,
                        EventFields, FieldSource, compile_condition)
from .loader import PRIORITIES, Problem, Rule, Ruleset, load_rules, output_fields, render_output

__all__ = ["BOOL_FIELDS", "FIELDS", "NUMERIC_FIELDS", "OPERATORS", "ConditionError",
           "EventFields", "FieldSource", "compile_condition",
           "PRIORITIES", "Problem", "Rule", "Ruleset", "load_rules", "output_fields", "render_output"]
