"""Typed config loading: frozen dataclasses from YAML plus --set overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from spaces._schema import SchemaError, apply_overrides, load, to_dict


@dataclass(frozen=True)
class Inner:
    steps: int = 10
    lr: float = 0.1
    mode: str = "a"


@dataclass(frozen=True)
class Cfg:
    name: str
    inner: Inner = Inner()
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict)
    maybe: int | None = None


def test_load_yaml_with_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\ninner: {steps: 5}\ntags: [a, b]\n")
    cfg = load(Cfg, f, overrides=["inner.lr=0.5", "extra.k=3", "maybe=7"])
    assert cfg == Cfg(name="x", inner=Inner(steps=5, lr=0.5), tags=("a", "b"), extra={"k": 3}, maybe=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "y"  # frozen
    assert to_dict(cfg)["tags"] == ["a", "b"]


def test_unknown_key_and_wrong_type_name_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\ninner: {stpes: 5, lr: fast}\n")
    with pytest.raises(SchemaError) as err:
        load(Cfg, f)
    msg = str(err.value)
    assert f"{f}: inner.stpes = 5: unknown field; allowed steps, lr, mode" in msg
    assert f'{f}: inner.lr = "fast": expected a number' in msg


def test_override_type_error_mentions_set(tmp_path):
    with pytest.raises(SchemaError, match=r"with --set overrides\): inner.steps = 2.5: expected an integer"):
        load(Cfg, data={"name": "x"}, overrides=["inner.steps=2.5"])


def test_bool_is_not_an_int():
    with pytest.raises(SchemaError, match="maybe = true"):
        load(Cfg, data={"name": "x", "maybe": True})


def test_override_syntax():
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}
    with pytest.raises(SchemaError, match="expected key=value"):
        apply_overrides({}, ["novalue"])
