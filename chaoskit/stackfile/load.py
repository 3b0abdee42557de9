"""Read and validate a stack file; every mistake is one ConfigError naming file, key, value.

TOML is read with the standard library (``tomllib``) and validated by the schema
(:mod:`chaoskit.stackfile.schema`).  Pydantic's errors are translated here, at the
boundary, into one line each: ``chaoskit.toml: services.serving.comand: unknown key
(did you mean 'command'?)``.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from chaoskit.errors import ConfigError
from chaoskit.stackfile.schema import StackFile

DEFAULT_NAME = "chaoskit.toml"


def load_stack_file(path: str | Path) -> StackFile:
    """The validated stack file at *path* (ConfigError naming the problem otherwise)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"stack file {str(path)!r} does not exist") from e
    except OSError as e:
        raise ConfigError(f"cannot read stack file {str(path)!r}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    return validate(raw, where=str(path))


def validate(raw: dict[str, Any], *, where: str) -> StackFile:
    try:
        return StackFile.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(error, raw) for error in e.errors()]
        more = f" (and {len(lines) - 1} more: {'; '.join(lines[1:4])})" if len(lines) > 1 else ""
        raise ConfigError(f"{where}: {lines[0]}{more}") from None


def _describe(error: Any, raw: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        valid = _fields_at(loc[:-1], raw)
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
        return f"{key}: unknown key ({hint})"
    if kind == "missing":
        return f"{key}: required key missing"
    message = error["msg"].removeprefix("Value error, ")
    if "input" in error and not isinstance(error["input"], dict):
        return f"{key} = {error['input']!r}: {message}"
    return f"{key}: {message}"


def _fields_at(loc: list[str], raw: dict[str, Any]) -> list[str]:
    """The keys the schema allows at *loc* (a path of table names, dict keys skipped)."""
    model: type[BaseModel] | None = StackFile
    for part in loc:
        if model is None:
            return []
        field = model.model_fields.get(part)
        if field is None:  # a dict key such as a service name: look at the dict's values
            continue
        model = _model_of(field.annotation)
    return sorted(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation like ``X | None`` or ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
