"""Typed configuration from plain data: dataclasses built from YAML/JSON mappings, naming any unknown key or
wrong type, and dotted key=value overrides. Below the methods (their configs are checked with it) and the
training package (recipes are built with it)."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the key and what is wrong."""

    located = False  # True once the message says where the value came from (config.source.RecipeSource.locate)


def nearest(word: str, choices: typing.Iterable[str]) -> str | None:
    """The choice nearest to a misspelt `word` (difflib), or None when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: typing.Iterable[str], prefix: str = "") -> str:
    """"; did you mean 'PREFIXchoice'?" for the choice nearest to a misspelt `word`, or "" when none is close."""
    near = nearest(word, choices)
    return "" if near is None else f"; did you mean '{prefix}{near}'?"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting YAML's forms (lists, ints for floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except RecipeError as e:
                errors.append(str(e))
        named = [c for a in args if typing.get_origin(a) is typing.Literal for c in typing.get_args(a)]
        if errors and named and ", got " in errors[0]:  # the first alternative's words, and the values named too
            errors[0] = errors[0].split(", got ")[0] + f", or one of {', '.join(map(repr, named))}, got {value!r}"
        raise RecipeError(errors[0] if errors else f"{key}: wrong type")
    if origin is typing.Literal:  # one of the named values, of their own types ("hflip", not True or 1)
        for choice in typing.get_args(tp):
            if type(value) is type(choice) and value == choice:
                return value
        raise RecipeError(f"{key}: expected one of {', '.join(map(repr, typing.get_args(tp)))}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise RecipeError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RecipeError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and "_" not in value:  # '1e-3' quoted; not '1_0', which Python reads as 10
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if value is False:  # YAML 1.1 reads an unquoted `no` (train.mixed_precision=no) as false
            return "no"
        raise RecipeError(f"{key}: expected a string, got {value!r}")
    raise RecipeError(f"{key}: unsupported type {tp}")


def build_dataclass(cls: type, values: dict[str, Any] | None, prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from a dict, naming any unknown key or wrong type."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise RecipeError(f"{prefix or 'recipe'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            where, hint = (f"{prefix}.{k}" if prefix else k), did_you_mean(k, names, f"{prefix}." if prefix else "")
            raise RecipeError(f"unknown recipe key '{where}' (known here: {', '.join(sorted(names))}){hint}")
    kwargs = {}
    for k, v in values.items():
        kwargs[k] = _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise RecipeError(f"{prefix or 'recipe'}: {e}") from None
    except ValueError as e:  # a config's own range checks (__post_init__) name their key
        raise RecipeError(str(e)) from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML parse error in one line: where (line and column of the file) and what, without the echoed source."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


class _RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML keeps the last one silently: a second
    `train:` section dropped the first's keys); a key a merge (`<<: *defaults`) brings may be set again. Plain
    scalars resolve as YAML 1.2's core schema does, not 1.1's: `true`/`false` are the booleans (`no`, `off`, `yes`,
    `on` stay strings: `output_dir: off` was the string 'no' of false), `020` is twenty (not octal 16) and `1:20`
    a string (not base-60 80)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                twice = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: construct_mapping names it
                continue
            if twice:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' given twice in one mapping",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep)


_YAML_11 = {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float")}
_RecipeLoader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in _YAML_11]
                                         for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_FLOAT_12 = (r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
             r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
for _tag, _pattern, _first in (  # YAML 1.2 core schema (section 10.3.2)
        ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        ("float", _FLOAT_12, "-+0123456789.")):
    _RecipeLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    return int(text[2:], 8) if text.startswith("0o") else int(text[2:], 16) if text.startswith("0x") else int(text)


_RecipeLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def read_yaml(text: str | bytes) -> Any:
    """YAML text as plain data (a safe loader: no tag runs code); yaml.YAMLError for what is not YAML, also for
    a key given twice in one mapping and nesting too deep for the parser (RecursionError)."""
    try:
        data = yaml.load(text, Loader=_RecipeLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    if _expanded_size(data, {}) > MAX_YAML_VALUES:
        raise yaml.YAMLError(f"its aliases expand to more than {MAX_YAML_VALUES:,} values (an alias bomb?)")
    return data


MAX_YAML_VALUES = 100_000  # values a recipe may hold once its aliases are expanded (a packaged one: under 300)


def _expanded_size(data: Any, sizes: dict[int, int]) -> int:
    """How many values `data` holds with every alias expanded (a list or mapping YAML shares is counted where each
    alias puts it), in time linear in the distinct lists and mappings (`sizes`: each one's, by id)."""
    if not isinstance(data, (list, dict)):
        return 1
    if id(data) not in sizes:
        sizes[id(data)] = 1  # a recursive alias counts once
        items = [v for kv in data.items() for v in kv] if isinstance(data, dict) else data
        sizes[id(data)] = 1 + sum(_expanded_size(v, sizes) for v in items)
    return sizes[id(data)]


def parse_value(text: str, key: str = "KEY") -> Any:
    """The value of override `key=text` as YAML; RecipeError naming it where it is none (`*.tar`, `[a`, `!x`)."""
    if text == "":
        return ""
    quoted = text.lstrip().startswith(("'", '"'))
    if not quoted and (" #" in text or "\t#" in text):  # YAML reads the rest as a comment: `output_dir=a # b` was 'a'
        raise RecipeError(f"override '{key}={text}': YAML reads ' #' and what follows as a comment; quote the value "
                          f"({key}=\"'{text}'\") or drop the comment")
    try:
        return read_yaml(text)
    except yaml.YAMLError as e:
        plain = text.isprintable() and "'" not in text  # one line, and quotable as it stands
        hint = f"; quote it: {key}=\"'{text}'\"" if plain else ""
        raise RecipeError(f"override '{key}={text if text.isprintable() else ascii(text)[1:-1]}': the value is not "
                          f"YAML ({yaml_problem(e)}){hint}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted `key=value` overrides (values parsed as YAML) to a nested dict."""
    out = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override '{item}' is not of the form key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise RecipeError(f"override '{key}': '{p}' is not a section")
            node = node[p]
        if isinstance(node.get(parts[-1]), dict):  # `model=null`, `model={}` would reset a whole section silently
            raise RecipeError(f"override '{item}': '{key.strip()}' is a section; set its keys "
                              f"({key.strip()}.KEY=VALUE), not the section")
        node[parts[-1]] = parse_value(text, key.strip())
    return out


def override_key(item: str) -> str:
    """The dotted key that the override `item` (`key=value`) sets."""
    return item.partition("=")[0].strip()


def _same_value(text: str, key: str) -> Any:
    """What decides whether two overrides of `key` agree: the value as YAML, with its type (`1` is not `true`); the
    text where it is no YAML (its own error comes later)."""
    try:
        value = parse_value(text, key)
    except RecipeError:
        return ("text", text.strip())
    return (type(value).__name__, value)


def repeated_override(overrides: list[str], given: list[str] | None = None) -> str | None:
    """The line refusing a dotted key that `overrides` set twice to different values (the last would hold without a
    word), else None; the same value twice passes. `given`: the overrides as the user wrote them (`max_steps=9` for
    `train.max_steps=9`), named in the line."""
    seen: dict[str, tuple[Any, str]] = {}
    for item, original in zip(overrides, overrides if given is None else given):
        key, sep, text = item.partition("=")
        if not sep:
            continue  # not key=value: apply_overrides says so
        key = key.strip()
        value = _same_value(text, key)
        if key in seen and seen[key][0] != value:
            return (f"override {key} given twice ('{seen[key][1]}' and '{original}'); it takes one value: "
                    "give it once")
        seen.setdefault(key, (value, str(original)))
    return None


def layered_overrides(base: list[str] | tuple[str, ...], extra: list[str] | tuple[str, ...]) -> list[str]:
    """`base` (a caller's own overrides) without those whose key `extra` (the user's) sets, then `extra`: the user's
    replace the caller's, as one override each (a key given twice with two values is refused). An undotted key of
    `extra` (`max_steps=9`) replaces the dotted one it stands for (`train.max_steps`)."""
    given = {override_key(item) for item in extra}
    short = {key for key in given if "." not in key}
    return [item for item in base if override_key(item) not in given
            and override_key(item).rpartition(".")[2] not in short] + list(extra)
