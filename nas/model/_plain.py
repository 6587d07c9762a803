"""Plain data (JSON) to the spec's dataclasses and back, checked on the way in: a spec
read from a study is data anyone may have edited, so every key and type is checked and a
bad one is an :class:`ArchSpecError` naming its path."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

from nas.errors import NasError


class ArchSpecError(NasError):
    """A spec that breaks a rule; ``path`` says where (``stages[2].attention.heads``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path} {message}")
        self.path = path


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    return value


def parse(cls: type, data: object, path: str) -> object:
    """Build dataclass ``cls`` from plain data, checking keys and types on the way."""
    where = path or "spec"
    if not isinstance(data, dict):
        raise ArchSpecError(where, f"must be a JSON object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in fields:
            raise ArchSpecError(f"{prefix}{key}", f"is not a known key of {cls.__name__}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{prefix}{name}")
        elif field.default is dataclasses.MISSING:
            raise ArchSpecError(f"{prefix}{name}", "is missing")
    return cls(**kwargs)


def _convert(typ: Any, value: object, path: str) -> object:
    origin = get_origin(typ)
    if origin in (Union, types.UnionType):
        options = get_args(typ)
        if value is None and type(None) in options:
            return None
        (inner,) = [t for t in options if t is not type(None)]
        return _convert(inner, value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ArchSpecError(path, f"must be a list, got {value!r}")
        (item, _ellipsis) = get_args(typ)
        return tuple(_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(typ):
        return parse(typ, value, path)  # type: ignore[arg-type]
    if typ is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ArchSpecError(path, f"must be an integer, got {value!r}")
        return value
    if typ is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ArchSpecError(path, f"must be a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ArchSpecError(path, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"no JSON conversion for {typ!r} at {path}")  # a bug in this module
