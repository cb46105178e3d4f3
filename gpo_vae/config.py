"""Typed, validated configuration: YAML mappings into (nested) dataclasses.

Every config section is a frozen dataclass whose fields carry the published defaults. Loading
checks unknown keys, types and values and names the offending key (``model.mask_prior``) and
the file, so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from gpo_vae.errors import UserError

T = TypeVar("T")
#: A number written as text: YAML 1.1 (PyYAML) reads ``3e-4`` (no dot) as a string.
_NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ConfigError(UserError, ValueError):
    """An invalid configuration value; the message names the key, the value and what is allowed."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not any of {[_type_name(o) for o in options]}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed and isinstance(value, int | float) and not isinstance(value, bool):
            # `precision: 32` means the option "32"
            text = str(int(value)) if float(value).is_integer() else str(value)
            if text in allowed:
                return text
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            item_type = args[0] if args else Any
            items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
            return float(value)  # `lr: 3e-4` arrives as text from YAML 1.1
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, validating keys and types recursively.

    Missing keys take the field defaults; unknown keys are an error listing the valid ones.
    Value checks in the dataclass's ``__post_init__`` that raise ``ValueError`` are reported
    as :class:`ConfigError` with the section name.
    """
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    prefix = f"{where}." if where else ""
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from err


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain nested dicts/lists (YAML- and JSON-friendly)."""
    raw = dataclasses.asdict(config)

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(raw)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what a config never needs and a typo or an attack produces:
    a key written twice in one mapping (YAML keeps the later silently) and anchors with aliases
    (``&a`` / ``*a``: nine nested aliases expand to a billion items, exhausting memory wherever
    the value is walked, printed or hashed)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _StrictYAMLError(
                f"an alias *{event.anchor} at line {event.start_mark.line + 1}: anchors and aliases (&name, "
                "*name) are not accepted in a config; write each value out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _StrictYAMLError(
                    f"the key {key!r} is written twice in one section (lines {seen[key]} and {line}); "
                    "YAML would keep the later silently: keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _StrictYAMLError(yaml.YAMLError):
    pass


#: A config's key naming the files it is composed from (``extends: [families/gpo_vae_plus.yaml,
#: datasets/rpe1.yaml]``): each is read in turn, later ones and then the config's own keys win.
EXTENDS = "extends"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with the file named in any error, composed from the files its
    ``extends`` list names (:data:`EXTENDS`; a part is looked up beside the file, then among the
    shipped configs).

    Refuses a key written twice and YAML aliases (:class:`_StrictLoader`) and an empty file: an
    empty run config would silently run the published defaults (the paper's model at full size,
    2,000 epochs, CausalBench's filters).
    """
    return _load_composed(Path(path), ())


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader)
    except _StrictYAMLError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(err)}); fix that line") from None
    if data is None:
        raise ConfigError(
            f"{path}: the file is empty; every key would take the published defaults (the paper's model "
            "at full size). Copy a shipped config (configs/gpo_vae_plus_custom.yaml for a screen of your "
            "own) and change what you need, or leave --config out"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _load_composed(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in chain:
        names = " → ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"{path}: its {EXTENDS} list leads back to itself ({names}); remove the loop")
    data = _read_mapping(path)
    parents = data.pop(EXTENDS, None)
    if parents is None:
        return data
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: {EXTENDS} must be a list of config files, got {parents!r}")
    merged: dict[str, Any] = {}
    for parent in parents:
        part = _load_composed(_part_path(path, parent), (*chain, path.resolve()))
        merged = merge_mappings(merged, part)
    return merge_mappings(merged, data)


def _part_path(path: Path, part: str) -> Path:
    """``part`` beside ``path``, else among the shipped configs (a shipped config copied elsewhere
    to be edited still finds the family and dataset files it is composed from)."""
    beside = path.parent / part
    if beside.exists():
        return beside
    from importlib.resources import files

    shipped = Path(str(files("gpo_vae.configs"))) / part
    if shipped.exists():
        return shipped
    raise ConfigError(
        f"{path}: {EXTENDS} names {part!r}, which is neither beside it ({beside}) nor among the "
        f"shipped configs ({shipped}); fix the path"
    )


def merge_mappings(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, section by section (a list or value is replaced whole)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_mappings(merged[key], value)
        else:
            merged[key] = value
    return merged


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line: what the YAML parser found and where (1-based line and column)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}" + (f", {context}" if context else "")


def load_config(cls: type[T], path: str | Path, overrides: Mapping[str, Any] | None = None) -> T:
    """Load ``path`` into ``cls``; ``overrides`` are dotted keys (``model.hop: 3``) applied first."""
    data = load_yaml(path)
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted = "a.b"``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[leaf] = value


__all__ = [
    "EXTENDS",
    "ConfigError",
    "from_dict",
    "load_config",
    "load_yaml",
    "merge_mappings",
    "set_dotted",
    "to_dict",
]
