"""A Falco-compatible rules engine: conditions (Falco's filter language) compiled to closures."""

from .condition import (BOOL_FIELDS, FIELDS, NUMERIC_FIELDS, OPERATORS, ConditionError,
                        EventFields, FieldSource, compile_condition)

__all__ = ["BOOL_FIELDS", "FIELDS", "NUMERIC_FIELDS", "OPERATORS", "ConditionError",
           "EventFields", "FieldSource", "compile_condition"]
