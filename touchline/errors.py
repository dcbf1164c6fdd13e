"""Exceptions raised by touchline.

Every message says what was wrong and where (file, line, field, setting), and what would be
accepted instead. The builtin mixins let callers catch ``ValueError`` or ``ImportError`` as
well as the touchline type.

::

    TouchlineError
    ├── ConfigError(ValueError)          a setting is missing or has a bad value
    ├── EngineError                      the engine is unreachable or lacks a feature
    │   └── MissingExtraError(ImportError)  an optional extra (e.g. spark) is not installed
    ├── SchemaError(ValueError)          a table lacks a column or has the wrong type
    ├── InputError(ValueError)           an input file or payload cannot be read at all
    │   └── MappingError                 a column mapping names a field that does not exist
    ├── SimulationError(ValueError)      simulator parameters are out of range
    ├── UnknownModelError(ValueError)    an attribution model name is not registered
    ├── UnknownKPIError(ValueError)      a KPI, stage or dimension name is not known
    ├── MissingInputError(LookupError)   a KPI's input table is empty or was never imported
    └── ModelFitError(ArithmeticError)   a model fit by maximum likelihood did not converge
"""

from __future__ import annotations


class TouchlineError(Exception):
    """Base class of every error touchline raises on purpose."""


class ConfigError(TouchlineError, ValueError):
    """A setting is missing or has a bad value."""


class EngineError(TouchlineError):
    """The engine cannot be reached or lacks a feature touchline needs."""


class MissingExtraError(EngineError, ImportError):
    """An optional dependency group is not installed."""


class SchemaError(TouchlineError, ValueError):
    """A table lacks a required column or a column has the wrong type."""


class InputError(TouchlineError, ValueError):
    """An input file or payload cannot be read at all (not a per-row problem)."""


class MappingError(InputError):
    """A column mapping is malformed or names a column the input does not have."""


class SimulationError(TouchlineError, ValueError):
    """Simulator parameters are out of range."""


class UnknownModelError(TouchlineError, ValueError):
    """An attribution model name is not in the registry."""


class UnknownKPIError(TouchlineError, ValueError):
    """A KPI, stage or breakdown dimension name is not in the KPI registry (or not one the
    KPI's tables hold)."""


class MissingInputError(TouchlineError, LookupError):
    """A KPI's input table is empty or was never imported: the message names the import or
    run that fills it, since a zero would read as a real figure."""


class ModelFitError(TouchlineError, ArithmeticError):
    """A model fitted by maximum likelihood (BG/NBD, Gamma-Gamma) did not converge, or its
    data cannot identify it (no repeat purchases): the message says which and on what."""


def did_you_mean(value: str, choices: object) -> str:
    """`` (did you mean 'x'?)`` naming the choice nearest ``value``, or ``""`` if none is
    near: the hint every "unknown name" message carries."""
    import difflib

    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)  # type: ignore[attr-defined]
    return f" (did you mean {close[0]!r}?)" if close else ""
