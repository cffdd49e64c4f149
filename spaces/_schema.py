"""Typed loading of frozen dataclasses from plain dicts (YAML/JSON), with precise errors.

Every config and the Policy are frozen dataclasses. ``from_dict`` checks unknown keys,
missing required fields and types, and reports every problem with the source file, the
field path, the offending value and what is allowed, e.g.::

    recipe.yaml: quant.layers["layer3.0.conv1"].w = 9: allowed 2-8, 16, 32
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from autocompress.errors import UserError
from autocompress.rundir import atomic_write_text

T = TypeVar("T")

_MISSING = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One problem with one field of a document."""

    path: str
    value: Any
    allowed: str

    def render(self, source: str | None) -> str:
        prefix = f"{source}: " if source else ""
        if self.value is _MISSING:
            return f"{prefix}{self.path}: missing required field ({self.allowed})"
        return f"{prefix}{self.path} = {_show(self.value)}: {self.allowed}"


class SchemaError(UserError, ValueError):
    """A document failed validation; ``errors`` lists every problem found."""

    def __init__(self, errors: Sequence[FieldError], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        super().__init__("\n".join(e.render(source) for e in self.errors))

    def with_source(self, source: str) -> SchemaError:
        return type(self)(self.errors, source)


def _show(value: Any) -> str:
    if isinstance(value, (str, bool)) or value is None:
        return json.dumps(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def join_path(base: str, key: str | int) -> str:
    """Field path notation: ``a.b``, ``a["x.y"]`` for mapping keys with dots, ``a[0]``."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    if base and ("." in key or not key.isidentifier()):
        return f'{base}["{key}"]'
    return f"{base}.{key}" if base else key


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(_show(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (dict, Mapping, collections_abc_mapping()):
        k, v = get_args(tp) or (str, Any)
        return f"a mapping of {_type_name(k)} to {_type_name(v)}"
    if origin in (tuple, list, Sequence):
        args = get_args(tp)
        return f"a list of {_type_name(args[0]) if args else 'values'}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with fields {', '.join(f.name for f in dataclasses.fields(tp))}"
    if tp is Any:
        return "any value"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def collections_abc_mapping():  # pragma: no cover - tiny helper for typing origins
    import collections.abc

    return collections.abc.Mapping


def _convert(tp: Any, value: Any, path: str, errors: list[FieldError]) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1 and dataclasses.is_dataclass(real[0]) and isinstance(value, Mapping):
            return _from_mapping(real[0], value, path, errors)  # optional section: its own errors
        for arg in args:
            if arg is type(None):
                continue
            trial: list[FieldError] = []
            out = _convert(arg, value, path, trial)
            if not trial:
                return out
        errors.append(FieldError(path, value, f"expected {_type_name(tp)}"))
        return None
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        errors.append(FieldError(path, value, "allowed " + ", ".join(_show(a) for a in get_args(tp))))
        return None
    if dataclasses.is_dataclass(tp):
        return _from_mapping(tp, value, path, errors)
    if origin in (dict, Mapping, collections_abc_mapping()):
        if not isinstance(value, Mapping):
            errors.append(FieldError(path, value, f"expected {_type_name(tp)}"))
            return {}
        kt, vt = get_args(tp) or (str, Any)
        out = {}
        for k, v in value.items():
            key = _convert(kt, k, join_path(path, str(k)), errors)
            out[key] = _convert(vt, v, join_path(path, str(k)), errors)
        return out
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            errors.append(FieldError(path, value, f"expected {_type_name(tp)}"))
            return ()
        args = get_args(tp)
        et = args[0] if args else Any
        return tuple(_convert(et, v, join_path(path, i), errors) for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    errors.append(FieldError(path, value, f"expected {_type_name(tp)}"))
    return value


def _prefix(base: str, sub: str) -> str:
    """Prefix an already-rendered field path ``sub`` with ``base``."""
    if not base:
        return sub
    return base + sub if sub.startswith("[") else f"{base}.{sub}"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_mapping(cls: type[T], data: Any, path: str, errors: list[FieldError]) -> T | None:
    if not isinstance(data, Mapping):
        errors.append(FieldError(path or "<document>", data, f"expected {_type_name(cls)}"))
        return None
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key in data:
        if key not in fields:
            errors.append(
                FieldError(join_path(path, str(key)), data[key], "unknown field; allowed " + ", ".join(fields))
            )
    for name, f in fields.items():
        fpath = join_path(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], fpath, errors)
        elif f.default is _MISSING and f.default_factory is _MISSING:  # type: ignore[misc]
            errors.append(FieldError(fpath, _MISSING, f"expected {_type_name(hints[name])}"))
    before = len(errors)
    if before:
        # still try to construct to surface __post_init__ checks when only nested errors exist
        pass
    try:
        obj = cls(**kwargs)
    except SchemaError as exc:
        for e in exc.errors:
            errors.append(dataclasses.replace(e, path=_prefix(path, e.path)))
        return None
    except TypeError:
        return None
    return obj


def from_dict(cls: type[T], data: Any, *, source: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; raise :class:`SchemaError` listing every problem."""
    errors: list[FieldError] = []
    obj = _from_mapping(cls, data, "", errors)
    if errors or obj is None:
        raise SchemaError(errors or [FieldError("<document>", data, "invalid")], source)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain, YAML/JSON-safe view of a dataclass tree (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def read_document(path: str | Path) -> Any:
    """Read YAML or JSON with ``yaml.safe_load`` / ``json``; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise SchemaError([FieldError("<document>", "...", f"not valid {p.suffix[1:] or 'YAML'}: "
                                                           f"{' '.join(str(exc).split())}")],
                          str(p)) from None


def write_document(data: Any, path: str | Path) -> Path:
    """Write ``data`` as YAML or JSON (by suffix), atomically."""
    p = Path(path)
    if p.suffix.lower() == ".json":
        atomic_write_text(p, json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        atomic_write_text(p, yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100))
    return p


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], yaml-parsed value)."""
    if "=" not in text:
        raise SchemaError([FieldError("--set", text, "expected key=value, e.g. search.trials=20")])
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise SchemaError([FieldError("--set", text, "empty key")])
    return key.split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a deep copy of ``data`` with each ``key=value`` override set (keys use dots)."""
    out = json.loads(json.dumps(data)) if data else {}
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise SchemaError([FieldError(".".join(keys), value, f"{k} is not a mapping")], "--set")
            node = nxt
        node[keys[-1]] = value
    return out


def load(cls: type[T], path: str | Path | None = None, *, data: Mapping[str, Any] | None = None,
         overrides: Sequence[str] = ()) -> T:
    """Load a frozen dataclass from a YAML/JSON file (or ``data``) plus ``--set`` overrides."""
    source = str(path) if path is not None else "<config>"
    raw = read_document(path) if path is not None else (data or {})
    if raw is None:
        raw = {}
    merged = apply_overrides(raw, overrides)
    try:
        return from_dict(cls, merged, source=source)
    except SchemaError as exc:
        raise exc.with_source(source + (" (with --set overrides)" if overrides else "")) from None
