"""Every config key's type and range, read from the annotated signature of the `_target_` it is passed to.

The signatures are the schema: `max_steps: Annotated[int, Field(ge=1)] | None`, `lr_schedule: Literal[...]`,
`validation_fraction: Annotated[float, Field(gt=0, lt=1)]`, `include: Regexes`. `check_node` validates a config
node's values against its target's signature with pydantic (strict: 2.5 is no integer, "abc" no number, a bool no
integer, `inf` and `nan` no number at all; a `Regex` must compile), without calling the target, so a task or model
that would load data or weights is checked before anything loads; the pre-launch pass (run/build.py) runs it over
every node of the composed config that has a `_target_`. A value that does not fit raises `ConfigError` naming the
key, the value and what is allowed, in one line. `allowed(hint)` writes what a type allows in words (also for the
docs).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import AfterValidator, BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from compress_sweeps.errors import ConfigError

HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
# `inf` and `nan` are no value any setting can use: a learning rate of inf trains to nan, a temperature of nan
# scores nothing; refused for every float of every signature
STRICT = ConfigDict(strict=True, arbitrary_types_allowed=True, allow_inf_nan=False)
WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
BOUNDS = {Ge: (">=", "ge"), Gt: (">", "gt"), Le: ("<=", "le"), Lt: ("<", "lt")}


@dataclasses.dataclass(frozen=True)
class Words:
    """Annotation metadata: what a constrained type allows, in words (`allowed` writes it instead of the base type's,
    a list of them as `plural`), and the problem a value its validator refuses has."""

    one: str
    plural: str
    problem: str


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as error:  # `a{99999999999}` overflows instead of re.error
        raise ValueError(f"'{pattern}': {error}") from None
    return pattern


def _not_one_string(value: Any) -> Any:
    if isinstance(value, str):  # a str is a sequence of one-letter regexes to pydantic: `include=attention` selects
        raise ValueError(f"one string, not a list: write [{value}]")  # every layer with an a, t, e, n, i or o
    return value


def chosen(hint: Any, group: str) -> Any:
    """`hint`, given by choosing a config of the subgroup `group` (`pruner/method`): a plain value in its place is
    refused with where the choices are and how to pick one."""
    where = f"a config of conf/{group}/, chosen with {group}=<name>"
    return Annotated[hint, Words(where, f"configs of conf/{group}/", "is not a config choice")]


# a regular expression on module names (a method's `include` / `exclude`): must compile, checked before anything loads
Regex = Annotated[str, AfterValidator(_compiles), Words("a regular expression", "regular expressions", "is invalid")]
Regexes = Annotated[Sequence[Regex], BeforeValidator(_not_one_string)]


@cache
def parameters(target: Callable | type) -> dict[str, Any]:
    """{parameter name -> annotation} of a function, a class's `__init__` or a dataclass; `...` for `**kwargs`."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target, include_extras=True)
        return {f.name: hints[f.name] for f in dataclasses.fields(target)}
    function = target.__init__ if isinstance(target, type) else target
    hints = typing.get_type_hints(function, include_extras=True)
    found: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        found[name] = ... if parameter.kind is inspect.Parameter.VAR_KEYWORD else hints.get(name, Any)
    return found


@cache
def _adapter(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint, config=STRICT)


def check_value(hint: Any, value: Any, key: str) -> None:
    """`value` must fit `hint`; else a one-line ConfigError naming `key`."""
    if hint is Any or hint is ...:
        return
    try:
        _adapter(hint).validate_python(value)
    except ValidationError as error:
        kinds = {e["type"] for e in error.errors()}
        bound = kinds & {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long"}
        problem = "is out of range" if bound else ("is unknown" if kinds == {"literal_error"} else "has the wrong type")
        if "finite_number" in kinds:
            problem = "is not a finite number"
        reasons = [str(e["ctx"]["error"]) for e in error.errors() if e["type"] == "value_error"]
        if reasons:  # a validator of the type refused it (a regex that does not compile): its words say why
            words = _words(hint)
            problem = words.problem if words is not None else "is invalid"
            raise ConfigError(key, value, f"must be {allowed(hint)} ({reasons[0]})", problem=problem) from None
        raise ConfigError(key, value, f"must be {allowed(hint)}", problem=problem) from None
    except Exception:  # a type pydantic cannot build a validator for: the target's own checks decide
        return


def _words(hint: Any) -> Words | None:
    """The `Words` of `hint` or of any type inside it (the element of a list, a member of a union)."""
    if typing.get_origin(hint) is typing.Annotated:
        found = [m for m in hint.__metadata__ if isinstance(m, Words)]
        if found:
            return found[0]
    return next((w for arg in typing.get_args(hint) if (w := _words(arg)) is not None), None)


def check_arguments(target: Callable | type, values: Mapping[str, Any], prefix: str) -> None:
    """Each of `values` fits `target`'s annotated parameter of the same name; an unknown name is an error unless
    the target takes `**kwargs` (then the target checks those itself)."""
    known = parameters(target)
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in known:
            if ... not in known.values():
                allowed_keys = sorted(n for n, hint in known.items() if hint is not ...)
                raise ConfigError(key, value, f"must be one of the keys {allowed_keys}", problem="is not a setting")
            continue
        check_value(known[name], _plain(value), key)


def _plain(value: Any) -> Any:
    """OmegaConf containers as plain lists and dicts, tuples as lists: what a config value would look like in YAML."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def check_node(node: DictConfig, prefix: str) -> None:
    """A config node with a `_target_`, and every node with a `_target_` inside it, against their signatures."""
    try:
        target = get_object(str(node["_target_"]))
    except Exception:
        raise ConfigError(
            f"{prefix}_target_", node["_target_"], "must name an importable class or function", problem="is unknown"
        ) from None
    plain = {}
    for name in node:
        if name in HYDRA_KEYS:
            continue
        value = node[name]
        if _holds_targets(value):
            _check_children(value, f"{prefix}{name}")
        else:
            plain[name] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    check_arguments(target, plain, prefix)


def _holds_targets(value: Any) -> bool:
    if isinstance(value, DictConfig):
        return "_target_" in value or any(_holds_targets(value[k]) for k in value)
    if isinstance(value, ListConfig):
        return any(_holds_targets(v) for v in value)
    return False


def _check_children(value: Any, prefix: str) -> None:
    if isinstance(value, DictConfig) and "_target_" in value:
        check_node(value, f"{prefix}.")
    elif isinstance(value, DictConfig):
        for name in value:
            _check_children(value[name], f"{prefix}.{name}")
    elif isinstance(value, ListConfig):
        for i, item in enumerate(value):
            _check_children(item, f"{prefix}[{i}]")


def allowed(hint: Any) -> str:
    """What a type allows, in words: `an integer >= 1 or null`, `one of linear | cosine`, `a list of strings`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        metadata = [m for field in args[1:] for m in getattr(field, "metadata", [field])]
        if words := next((m for m in metadata if isinstance(m, Words)), None):
            return words.one
        bounds = [f"{BOUNDS[type(m)][0]} {getattr(m, BOUNDS[type(m)][1])}" for m in metadata if type(m) in BOUNDS]
        shortest = max((m.min_length for m in metadata if isinstance(m, MinLen)), default=0)
        longest = min((m.max_length for m in metadata if isinstance(m, MaxLen)), default=None)
        if _is_sequence(typing.get_origin(args[0])):
            return _list(args[0], shortest, longest)
        return " ".join([allowed(args[0]), " and ".join(bounds)]).strip()
    if origin in (typing.Union, types.UnionType):
        parts = [allowed(a) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "one of " + " | ".join(str(a) for a in args)
    if _is_sequence(origin):
        return _list(hint, 0, None)
    if origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        return "a mapping"
    return WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _is_sequence(origin: Any) -> bool:
    return origin in (list, tuple, Sequence) or (isinstance(origin, type) and issubclass(origin, Sequence))


def _list(hint: Any, shortest: int, longest: int | None) -> str:
    """`a non-empty list of integers >= 1`, `a list of at most 2 strings`."""
    args = typing.get_args(hint)
    element = allowed(args[0]) if args else "a value"
    first, _, rest = element.removeprefix("an ").removeprefix("a ").partition(" ")
    plural = {"true": "booleans", "null": "nulls"}.get(first, f"{first}s") + (f" {rest}" if rest else "")
    if args and typing.get_origin(args[0]) is typing.Annotated and (words := _words(args[0])) is not None:
        plural = words.plural
    size = f"at most {longest} " if longest is not None else ""
    return f"a {'non-empty ' if shortest else ''}list of {size}{plural}"
