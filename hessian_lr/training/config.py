"""One configuration language: frozen dataclasses <-> ``--flag value`` options, and schedule specs.

* :func:`add_dataclass_args` adds one ``--field-name`` option per dataclass field, with a parser
  chosen from the field's type hint (``int``, ``float``, ``str``, ``bool`` as
  ``--x/--no-x``, ``X | None`` accepting ``none``, ``int | float``, tuples/lists as ``a,b,c`` or
  JSON, dicts as JSON or ``k=v,...``, ``Literal`` as choices); a field's ``metadata`` may give
  ``help``, ``metavar`` and ``type`` (its own parser).
* :func:`dataclass_from_args` builds the dataclass from the options given (the others keep the
  defaults or those of a ``base`` instance), so a value error is raised by the class's own
  validation, at parse time.
* :func:`parse_short_form` reads the short ``NAME:key=value,...`` form (values are JSON, else
  bare words), and :func:`schedule_spec` turns JSON, a number, or ``NAME:key=value,...`` into a
  ``Schedule.to_dict()`` description, NAME being a schedule class name, case and ``-``/``_``
  insensitive (``onecycle``, ``OneCycle``, ``one_cycle``, ``cyclic``, ``sgdr``, ``multistep``).

Example:
    >>> import argparse, dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Cfg:
    ...     steps: int = 10
    ...     sizes: tuple[int, ...] = (1, 2)
    ...     decay: float | None = None
    >>> p = argparse.ArgumentParser()
    >>> add_dataclass_args(p, Cfg)
    >>> dataclass_from_args(Cfg, p.parse_args(["--sizes", "3,4", "--decay", "0.5"]))
    Cfg(steps=10, sizes=(3, 4), decay=0.5)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

from ..schedules import schedule_from_dict, schedule_names

__all__ = [
    "add_dataclass_args",
    "dataclass_from_args",
    "field_parser",
    "parse_short_form",
    "schedule_spec",
    "SCHEDULE_HELP",
]

_NONE_WORDS = ("none", "null")


# ----------------------------------------------------------------------------- value parsers
def _json_or_word(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_short_form(text: str) -> tuple[str, dict[str, Any]]:
    """Split ``NAME:key=value,key=value`` into ``(NAME, {key: value})``.

    Values are JSON when they parse as JSON (numbers, ``true``, ``[600, 900]``), else bare words
    (``mode=triangular2``). An item starts at a comma followed by ``identifier=``, so a list value
    may hold commas (``milestones=[600,900]``). ``NAME`` may be empty (``key=value,...``).

    Raises:
        ValueError: an item that is not ``key=value``.

    Example:
        >>> parse_short_form("multistep:base_lr=0.1,milestones=[600,900]")
        ('multistep', {'base_lr': 0.1, 'milestones': [600, 900]})
    """
    name, colon, rest = text.partition(":")
    if not colon and "=" in name:
        name, rest = "", name
    options: dict[str, Any] = {}
    for item in re.split(r",(?=\s*[A-Za-z_]\w*\s*=)", rest):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"option {item.strip()!r} is not key=value")
        options[key.strip()] = _json_or_word(value.strip())
    return name.strip(), options


def _scalar_parser(hint: Any) -> Callable[[str], Any]:
    if hint is int:
        return int
    if hint is float:
        return float
    return str


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return typing.get_args(hint)
    return None


def field_parser(hint: Any) -> tuple[Callable[[str], Any], str]:
    """``(parse, metavar)`` for a type hint: a function from the flag's text to the value.

    Raises:
        TypeError: (from ``parse``) never; ``parse`` raises ValueError on bad text.
    """
    args = _union_args(hint)
    if args is not None:
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if set(rest) == {int, float}:

            def number(text: str) -> int | float:
                try:
                    return int(text)
                except ValueError:
                    return float(text)

            inner, metavar = number, "NUMBER"
        else:
            inner, metavar = field_parser(rest[0]) if len(rest) == 1 else (_json_or_word, "VALUE")

        def maybe(text: str) -> Any:
            if optional and text.strip().lower() in _NONE_WORDS:
                return None
            return inner(text)

        return maybe, metavar + ("|none" if optional else "")
    origin = typing.get_origin(hint)
    if origin in (tuple, list) or hint in (tuple, list):
        elem_args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        elem = _scalar_parser(elem_args[0]) if elem_args else _json_or_word

        def sequence(text: str) -> Any:
            text = text.strip()
            items = json.loads(text) if text.startswith("[") else text.split(",")
            values = [elem(str(v).strip()) if isinstance(v, str) else v for v in items]
            values = [v for v in values if v != ""]
            return tuple(values) if (origin or hint) is tuple else values

        return sequence, "A,B,..."
    if origin is dict or hint is dict:

        def mapping(text: str) -> dict[str, Any]:
            text = text.strip()
            if text.startswith("{"):
                value = json.loads(text)
                if not isinstance(value, dict):
                    raise ValueError("expected a JSON object")
                return value
            name, options = parse_short_form(text)
            if name:
                raise ValueError(f"expected JSON or key=value,..., got {text!r}")
            return options

        return mapping, "JSON|K=V,..."
    if origin is Literal:
        choices = typing.get_args(hint)
        return (lambda text: _choice(text, choices)), "|".join(map(str, choices))
    parse = _scalar_parser(hint)
    return parse, parse.__name__.upper()


def _choice(text: str, choices: tuple[Any, ...]) -> Any:
    for c in choices:
        if str(c) == text:
            return c
    raise ValueError(f"choose one of {', '.join(map(str, choices))}")


def _argparse_type(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, TypeError, json.JSONDecodeError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = name  # argparse names the type in its messages
    return convert


# ----------------------------------------------------------------------------- dataclasses
def add_dataclass_args(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    defaults: Any = None,
    skip: tuple[str, ...] = (),
    prefix: str = "",
) -> None:
    """Add one ``--<field-name>`` option per field of dataclass ``cls``.

    Every option defaults to None ("not given"), so :func:`dataclass_from_args` knows which
    fields were set. Help texts show the default (of ``defaults``, else of ``cls()``).

    Args:
        parser: an ``ArgumentParser`` (or argument group).
        cls: the dataclass.
        defaults: an instance whose values the help shows (e.g. a preset).
        skip: field names to leave out.
        prefix: prepended to each destination name (``ns.<prefix><field>``).
    """
    hints = typing.get_type_hints(cls)
    if defaults is None:
        try:
            defaults = cls()
        except TypeError:
            defaults = None
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        meta = f.metadata or {}
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name, None) if defaults is not None else None
        shown = f" (default: {json.dumps(_plain(default))})" if defaults is not None else ""
        help_text = (meta.get("help") or "") + shown
        kw: dict[str, Any] = {"dest": prefix + f.name, "default": None, "help": help_text}
        hint = hints.get(f.name, str)
        if hint is bool and "type" not in meta:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        parse, metavar = (meta["type"], "VALUE") if "type" in meta else field_parser(hint)
        parser.add_argument(
            flag,
            type=_argparse_type(parse, f.name),
            metavar=meta.get("metavar", metavar),
            **kw,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def dataclass_from_args(cls: type, ns: argparse.Namespace, *, base: Any = None, prefix: str = ""):
    """Build ``cls`` from the options set in ``ns`` (others from ``base`` or the defaults).

    Raises:
        ValueError: from the class's own validation (report it with ``parser.error``).
    """
    changes = {}
    for f in dataclasses.fields(cls):
        value = getattr(ns, prefix + f.name, None)
        if value is not None and f.init:
            changes[f.name] = value
    if base is not None:
        return dataclasses.replace(base, **changes)
    return cls(**changes)


# ----------------------------------------------------------------------------- schedules
SCHEDULE_HELP = """\
--schedule takes JSON, e.g. '{"type": "OneCycle", "base_lr": 0.05, "max_lr": 0.2,
"step_size": 135, "total_steps": 300}', a bare number (a constant LR), or NAME:key=value,...
with NAME a schedule class (case-insensitive, '-'/'_' ignored: {names})
and values as JSON (lists in brackets: milestones=[600,900]).
Filled in from --steps when left out: OneCycle total_steps = steps, step_size = 0.45*steps,
base_lr = max_lr/4; OneCycleCosine, WarmupCosine, WarmupStableDecay total_steps = steps;
MultiStep milestones at 62.5 % and 87.5 % of the steps (the Super-Convergence baseline).
Examples:
  --schedule 0.1
  --schedule onecycle:max_lr=0.2
  --schedule cyclic:base_lr=0.01,max_lr=0.1,step_size_up=200,mode=triangular2
  --schedule multistep:base_lr=0.05
  --schedule warmupcosine:peak_lr=0.2,warmup_steps=50""".replace(
    "{names}", ", ".join(schedule_names())
)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


def schedule_spec(spec: str | Mapping[str, Any], *, steps: int | None = None) -> dict[str, Any]:
    """A schedule description (``Schedule.to_dict()`` form) from JSON, a number or a short form.

    Args:
        spec: a dict with ``"type"`` (kept as given, lengths filled in), JSON text, a number (a
            constant LR) or ``NAME:key=value,...``.
        steps: the run's length in optimizer steps, to fill in missing lengths (see
            ``SCHEDULE_HELP``); None fills nothing.

    Returns:
        A dict with ``"type"``; built once to validate it.

    Raises:
        ValueError: unparsable text, an unknown name, or a schedule its class rejects.

    Example:
        >>> schedule_spec("onecycle:max_lr=0.2", steps=100)["step_size"]
        45
    """
    if isinstance(spec, Mapping):
        d = dict(spec)
        if "type" not in d:
            raise ValueError(f'a schedule dict needs a "type" key, got {d}')
        built = _fill(d, steps)
        return _checked(built, schedule_from_dict, keep=True)
    if not isinstance(spec, str):
        raise TypeError(f"a schedule is a dict or a string, got {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise ValueError("the schedule is empty")
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"the schedule is not valid JSON: {err}") from None
        if not isinstance(d, dict) or "type" not in d:
            raise ValueError('a JSON schedule must be an object with a "type" key')
        return _checked(_fill(d, steps), schedule_from_dict, keep=True)
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if not (math.isfinite(number) and number > 0):
            raise ValueError(f"a constant LR must be a positive finite number, got {text}")
        return _checked({"type": "Constant", "base_lr": number}, schedule_from_dict, keep=False)
    name, options = parse_short_form(text)
    classes = {_key(n): n for n in schedule_names()}
    cls = classes.get(_key(name))
    if cls is None:
        raise ValueError(
            f"unknown schedule {name!r}; use one of {', '.join(schedule_names())} "
            "(case-insensitive) or JSON"
        )
    return _checked(_fill({"type": cls, **options}, steps), schedule_from_dict, keep=False)


def _checked(d: dict[str, Any], build: Callable[[dict], Any], *, keep: bool) -> dict[str, Any]:
    try:
        schedule = build(d)
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid schedule {d}: {err}") from None
    return d if keep else schedule.to_dict()


#: Schedules shaped over the whole run: ``total_steps`` defaults to the run's length.
_WHOLE_RUN = ("OneCycleCosine", "WarmupCosine", "WarmupStableDecay")


def _fill(d: dict[str, Any], steps: int | None) -> dict[str, Any]:
    d = dict(d)
    kind = d.get("type")
    if steps is None:
        return d
    if kind == "OneCycle":
        d.setdefault("total_steps", steps)
        d.setdefault("step_size", int(0.45 * d["total_steps"]))
        if "base_lr" not in d and isinstance(d.get("max_lr"), (int, float)):
            d["base_lr"] = d["max_lr"] / 4
    elif kind in _WHOLE_RUN:
        d.setdefault("total_steps", steps)
    elif kind == "MultiStep" and "milestones" not in d:
        d["milestones"] = [round(0.625 * steps), round(0.875 * steps)]
    return d
