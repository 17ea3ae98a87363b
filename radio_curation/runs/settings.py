"""Typed settings: every key a stage reads has a type, checked before its run is claimed.

A :class:`~radio_curation.runs.stage.Stage` declares the type of each of its settings (a type annotation:
``int``, ``Annotated[int, Ge(1)] | None``, ``Literal["float32", "float16"]`` ...) or :data:`Built` for a
node Hydra instantiates (a config group with ``_target_``): the keys of such a node are typed by the
annotations of the parameters they become, so a key's type is written once, where the code takes it.
Nested nodes (``normalization.interval``), lists and dicts of nodes are followed.

:func:`check_settings` checks every value against its type and writes it in its canonical form
(``1400.0`` for an integer is ``1400``, ``1`` for a number is ``1.0``), so the same setting written
differently gives one run ID. A value of the wrong type or out of range is a :class:`SettingError`:
one line naming the key, the value, what was expected and, for a set of choices, the closest one.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at

from radio_curation.errors import RadioCurationError, close_matches

#: A count of at least one (windows, batches, workers that must exist).
PositiveInt = Annotated[int, at.Ge(1)]
#: A count that may be zero (loader workers: 0 reads in the main process).
NonNegativeInt = Annotated[int, at.Ge(0)]
#: A size or limit above zero (gigabytes, minutes).
PositiveFloat = Annotated[float, at.Gt(0)]


class Built:
    """The type of a config node Hydra instantiates (``_target_``), or null: each of its keys is typed by
    the annotation of the parameter it becomes."""


class SettingError(RadioCurationError):
    """A setting whose value does not have its declared type or is out of its range."""


#: The type of a key no annotation types (a target's parameter without one, or ``**kwargs``).
UNTYPED = None

_SPECIAL = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


@functools.cache
def target_types(target: str) -> dict[str, Any]:
    """Parameter name -> annotation of what ``_target_`` names (a class: its constructor, and the base
    classes' constructors its ``**kwargs`` go to)."""
    from hydra.utils import get_object

    obj = get_object(target)
    if not inspect.isclass(obj):
        return _hints(obj)
    hints: dict[str, Any] = {}
    for klass in obj.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        init = vars(klass)["__init__"]
        hints = {**_hints(init), **hints}
        passes_on = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(init).parameters.values())
        if not passes_on:
            break
    return hints


def _hints(function: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:
        # An annotation naming something imported only for type checkers: evaluate the others one by one.
        unwrapped = inspect.unwrap(function)
        namespace = vars(sys.modules[unwrapped.__module__])
        hints = {}
        for name, annotation in getattr(unwrapped, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
            except Exception:
                continue
        return hints


def _is_node(value: Any) -> bool:
    return isinstance(value, Mapping) and "_target_" in value


def typed_leaves(key: str, value: Any, declared: Any) -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, value, type)`` of every value under ``key`` (type :data:`UNTYPED` where none is
    declared); a node Hydra builds is followed into its keys."""
    if declared is Built or (_is_node(value) and declared is not UNTYPED):
        if value is None:
            return
        if not isinstance(value, Mapping):
            yield key, value, Built
            return
        hints = target_types(str(value["_target_"])) if _is_node(value) else {}
        for name, item in value.items():
            if name in _SPECIAL:
                continue
            sub = f"{key}.{name}"
            if name in hints:
                yield from typed_leaves(sub, item, hints[name])
            elif _is_node(item) or (not _is_node(value) and isinstance(item, Mapping | type(None))):
                yield from typed_leaves(sub, item, Built)
            elif not _is_node(value) and isinstance(item, list) and all(map(_is_node, item)):
                for i, node in enumerate(item):
                    yield from typed_leaves(f"{sub}[{i}]", node, Built)
            else:
                yield sub, item, UNTYPED
        return
    if isinstance(declared, Mapping):
        if not isinstance(value, Mapping):
            yield key, value, dict
            return
        for name, item in value.items():
            yield from typed_leaves(f"{key}.{name}", item, declared.get(name, UNTYPED))
        return
    yield key, value, declared


@functools.cache
def _adapter(declared: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(declared, config=ConfigDict(arbitrary_types_allowed=True))


def _takes_bool(declared: Any) -> bool:
    """Whether ``declared`` takes true and false (an integer or a number does not, here)."""
    origin = get_origin(declared)
    if origin is typing.Annotated:
        return _takes_bool(get_args(declared)[0])
    if origin in (Union, types.UnionType):
        return any(_takes_bool(a) for a in get_args(declared))
    if origin is Literal:
        return any(isinstance(a, bool) for a in get_args(declared))
    return declared is Any or declared is bool or declared is object


def _plain(checked: Any, given: Any) -> Any:
    """``checked`` in the config's own kinds of values (lists, dicts, numbers, strings)."""
    if isinstance(checked, bool | int | float | str | type(None)):
        return checked
    if isinstance(checked, Sequence) and isinstance(given, Sequence) and len(checked) == len(given):
        return [_plain(c, g) for c, g in zip(checked, given, strict=True)]
    if isinstance(checked, Mapping) and isinstance(given, Mapping):
        return {k: _plain(v, given.get(k)) for k, v in checked.items()}
    return given


def check_value(key: str, value: Any, declared: Any) -> Any:
    """``value`` of ``key`` in its canonical form.

    Raises
    ------
    SettingError
        ``value`` does not have the ``declared`` type or is out of its range.
    """
    from pydantic import ValidationError

    if declared is UNTYPED or declared is Built:
        return value
    if isinstance(value, bool) and not _takes_bool(declared):
        raise SettingError(_message(key, value, declared))
    try:
        checked = _adapter(declared).validate_python(value)
    except ValidationError:
        raise SettingError(_message(key, value, declared)) from None
    return _plain(checked, value)


def _choices(declared: Any) -> list[str]:
    origin = get_origin(declared)
    if origin is Literal:
        return [str(a) for a in get_args(declared)]
    if origin in (Union, types.UnionType, typing.Annotated):
        return [c for a in get_args(declared) for c in _choices(a)]
    return []


def _show(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _message(key: str, value: Any, declared: Any) -> str:
    choices = _choices(declared)
    close = close_matches(str(value), choices, n=1, cutoff=0.0) if choices else ""
    return f"{key}={_show(value)}: expected {describe(declared)}{close}"


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _bounds(constraint: Any) -> list[str]:
    return [
        f"{sign} {getattr(constraint, name)}"
        for name, sign in _BOUNDS.items()
        if getattr(constraint, name, None) is not None
    ]


def describe(declared: Any) -> str:
    """What ``declared`` accepts, in words: ``an integer ≥ 2``, ``one of fail, skip``, ``null or ...``."""
    origin, args = get_origin(declared), get_args(declared)
    if origin is typing.Annotated:
        limits = [b for meta in args[1:] for b in _bounds(meta)]
        return " ".join([describe(args[0]), " and ".join(limits)]).strip()
    if origin in (Union, types.UnionType):
        literals = [a for a in args if get_origin(a) is Literal]
        named = [describe(a) for a in args if a is not type(None) and a not in literals]
        if literals:
            named.append(describe(Literal[tuple(c for a in literals for c in get_args(a))]))
        return " or ".join(named + (["null"] if type(None) in args else []))
    if origin is Literal:
        return f"one of {', '.join(_show(a) for a in args)}"
    if origin in (list, Sequence, set, frozenset) or (origin is tuple and args[-1:] == (Ellipsis,)):
        return f"a list ({describe(args[0])} each)" if args else "a list"
    if origin is tuple:
        return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
    if origin in (dict, Mapping):
        return f"a mapping ({describe(args[1])} each)" if args else "a mapping"
    if declared in _NAMES:
        return _NAMES[declared]
    if declared is Any:
        return "any value"
    return f"a {getattr(declared, '__name__', str(declared))}"


def check_settings(values: dict[str, Any], declared: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (nested, plain: dotted key -> value) with every declared key checked against its type and
    written in its canonical form; keys ``values`` does not have are skipped.

    Raises
    ------
    SettingError
        The first value of the wrong type or out of range.
    """
    checked = json.loads(json.dumps(values))
    # Keys of their own first: a node interpolating one (``eval.seed: ${seed}``) reports it as set.
    for top, kind in sorted(declared.items(), key=lambda item: item[1] is Built):
        parent, name = _locate(checked, top)
        if parent is None:
            continue
        for key, value, leaf_type in typed_leaves(top, parent[name], kind):
            _replace(checked, key, check_value(key, value, leaf_type))
    return checked


def _locate(tree: dict[str, Any], dotted: str) -> tuple[Any, str]:
    *head, last = dotted.split(".")
    node: Any = tree
    for part in head:
        node = node.get(part) if isinstance(node, dict) else None
    return (node, last) if isinstance(node, dict) and last in node else (None, last)


def _replace(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = tree
    parts = [p for part in dotted.split(".") for p in _indexed(part)]
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def _indexed(part: str) -> list[str | int]:
    """``name[2]`` -> ``["name", 2]``."""
    name, *indices = part.replace("]", "").split("[")
    return [name, *(int(i) for i in indices)]
