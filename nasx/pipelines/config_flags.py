"""Command-line flags generated from a config dataclass, so each setting's default and help are
written once, on the dataclass field, and every field gets a flag.

::

    @dataclass
    class RunConfig:
        data: Path = field(metadata={"help": "dataset root", "metavar": "DIR"})
        steps: int = field(default=30, metadata={"help": "training steps"})
        lr: Optional[float] = field(default=None, metadata={"help": "learning rate (default: the optimizer's)"})
        optimizer: str = field(default="adamw", metadata={"help": "optimizer", "choices": ("adamw", "sgd")})
        progress: bool = field(default=True, metadata={"help": "no progress output", "flag": "--quiet",
                                                       "negate": True})
        proxy: ProxyConfig = field(default_factory=lambda: ProxyConfig(steps=30),
                                   metadata={"help": "the proxy task"})

    add_config_arguments(parser, RunConfig)       # --data DIR --steps STEPS --lr LR --optimizer {adamw,sgd}
                                                  # --quiet --proxy-steps STEPS --proxy-lr LR ...
    cfg = config_from_args(RunConfig, parser.parse_args())

Field metadata keys (only ``help`` is required):

``help``
    The help text. A field without it is a ``TypeError`` when its flag is made. For a bool it
    tells what the flag does (``--verbose``: "more output"; ``--quiet``: "no progress output"),
    except for the automatic ``--no-name`` of a bool defaulting to True, where it tells what the
    setting does when on ("time the detector"). The default is appended: `` (default: X)``,
    ``none`` for None, ``off`` for a switch, ``on; this flag turns it off`` for ``--no-name``;
    not when the text already says ``(default...``, nor for a None default when it says
    ``none`` or ``default`` (``"learning rate (none: the optimizer's)"``).
``flag``
    The flag's name instead of ``--field-name``, e.g. ``"--meta-val"``. Under a prefix (a nested
    config) the prefix still applies: ``"--quiet"`` on a field of ``proxy`` is ``--proxy-quiet``.
    On a nested dataclass field it renames the prefix of its flags.
``metavar``
    The value's name in the usage text (default: the flag's name in capitals, ``--meta-val META_VAL``).
``choices``
    A sequence of the allowed values; argparse rejects others (exit code 2).
``negate``
    ``True`` on a bool field: its flag sets it to False (``progress: bool = True`` with
    ``{"flag": "--quiet", "negate": True}``). A bool defaulting to True always gets a flag that
    sets False (``--no-name`` unless ``flag`` names another), so ``negate`` only makes that explicit.
``cli``
    ``False`` leaves the field without a flag; :func:`config_from_args` then uses its default
    (or an override).

Types (from :func:`typing.get_type_hints`, so string annotations from
``from __future__ import annotations`` work): ``int``, ``float``, ``str``, ``bool``,
``pathlib.Path``, ``typing.Literal[...]`` (its values are the choices), ``Optional[X]`` / ``X | None``,
and tuples / lists of int, float, str or Path (``tuple[int, ...]``, ``tuple[int, int]``,
``list[str]``), given as several values (``--sizes 96 128``). A field whose type is itself a
dataclass is flattened into ``--<field>-<subfield>`` flags (recursively), with the defaults of the
instance the parent's default (``default_factory``) holds. A field without a default is a required flag.

Flags are stored under ``dest`` = the field's path joined by ``__`` (``budget_minutes``,
``proxy__steps``), which is how :func:`config_from_args` finds them again.
"""
from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import pathlib
import re
import types
import typing
from typing import Any, Iterable, Optional

__all__ = ["add_config_arguments", "config_from_args"]

_MISSING = dataclasses.MISSING
_SCALARS = (int, float, str)
_ALWAYS_APPEND = "%(default).0s"  # renders as "": stops ArgumentDefaultsHelpFormatter adding its own default


class _Spec(typing.NamedTuple):
    kind: str                 # "scalar" | "bool" | "seq" | "nested"
    base: Any                 # scalar type, element type, or the nested dataclass
    optional: bool            # Optional[...]
    container: Any = None     # tuple or list, for "seq"
    length: Optional[int] = None  # fixed tuple length, for "seq"
    choices: Optional[tuple] = None  # from Literal[...]


def _dest(path: tuple) -> str:
    return "__".join(path)


def _norm_prefix(prefix: str) -> tuple:
    prefix = prefix.strip().lstrip("-").rstrip("-_")
    return tuple(p for p in prefix.replace("-", "_").split("__") if p) if prefix else ()


def _flag_part(name: str) -> str:
    return name.replace("_", "-")


def _hints(cls) -> dict:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    try:
        return typing.get_type_hints(cls)
    except Exception as e:  # a name the annotations use is not importable from the class's module
        raise TypeError(f"{cls.__qualname__}: cannot resolve its field annotations ({e}); define the "
                        f"dataclass at module level and import the types it names at run time") from e


def _is_path_type(t) -> bool:
    return isinstance(t, type) and issubclass(t, pathlib.PurePath)


def _scalar_base(t) -> bool:
    return t in _SCALARS or _is_path_type(t)


def _literal_choices(t):
    values = typing.get_args(t)
    kinds = {type(v) for v in values}
    if not values or len(kinds) != 1 or next(iter(kinds)) not in _SCALARS:
        raise ValueError
    return next(iter(kinds)), tuple(values)


def _spec(cls, name: str, t) -> _Spec:
    optional = False
    origin = typing.get_origin(t)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(t)) != 2:
            raise TypeError(f"{cls.__qualname__}.{name}: a union ({t}) has no flag; only Optional[X] does")
        optional, t = True, args[0]
        origin = typing.get_origin(t)
    if t is bool:
        if optional:
            raise TypeError(f"{cls.__qualname__}.{name}: Optional[bool] has no flag; use bool")
        return _Spec("bool", bool, False)
    if _scalar_base(t):
        return _Spec("scalar", t, optional)
    if origin is typing.Literal:
        try:
            base, choices = _literal_choices(t)
        except ValueError:
            raise TypeError(f"{cls.__qualname__}.{name}: {t} has no flag; Literal values must all be int, "
                            f"all float or all str") from None
        return _Spec("scalar", base, optional, choices=choices)
    if origin in (tuple, list):
        args = typing.get_args(t)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            elems, length = (args[0],), None
        elif origin is tuple and args:
            elems, length = tuple(set(args)), len(args)
        elif origin is list and len(args) == 1:
            elems, length = args, None
        else:
            elems, length = (), None
        if len(elems) != 1 or not _scalar_base(elems[0]):
            raise TypeError(f"{cls.__qualname__}.{name}: {t} has no flag; sequences must hold one type of "
                            f"int, float, str or Path (tuple[int, ...], tuple[int, int], list[str])")
        return _Spec("seq", elems[0], optional, container=origin, length=length)
    if isinstance(t, type) and dataclasses.is_dataclass(t):
        if optional:
            raise TypeError(f"{cls.__qualname__}.{name}: Optional[{t.__qualname__}] cannot be flattened into "
                            f"flags; make the field a {t.__qualname__} with a default")
        return _Spec("nested", t, False)
    raise TypeError(f"{cls.__qualname__}.{name}: no flag for type {t!r}; use int, float, str, bool, Path, "
                    f"Literal, Optional, tuples or lists of those, or a dataclass, or metadata "
                    f"{{'cli': False}} to leave it off the command line")


def _field_default(f: dataclasses.Field):
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def _show(value, spec: _Spec) -> str:
    if value is None:
        return "none"
    if spec.kind == "bool":
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value) if value else "empty"
    if isinstance(value, str) and not value:
        return '""'
    return str(value)


def _says_default(help_text: str, default) -> bool:
    """Whether the help already tells the default: "(default..." in it, or for None, "none" or
    "default" (``"learning rate (none: the optimizer's)"``)."""
    low = help_text.lower()
    if default is None:
        return re.search(r"\b(none|default)\b", low) is not None
    return "(default" in low


def _walk(cls, path: tuple, rel: tuple, defaults: Optional[Any], exclude: set):
    """(field, spec, path, rel path, default) for each init field of ``cls`` that gets a flag or is
    flattened; ``path`` is the dest path (prefix included), ``rel`` the path below the prefix."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        p, r = path + (f.name,), rel + (f.name,)
        if f.metadata.get("cli", True) is False or ".".join(r) in exclude:
            continue
        if defaults is not None:
            default = getattr(defaults, f.name)
        else:
            default = _field_default(f)
        yield f, _spec(cls, f.name, hints[f.name]), p, r, default


def add_config_arguments(parser, cls, *, prefix: str = "", exclude: Iterable[str] = ()) -> None:
    """Add one flag per field of the dataclass ``cls`` to ``parser`` (an ``ArgumentParser`` or an
    argument group); see the module documentation for the metadata keys and the types handled.

    Args:
        prefix: a name put before every flag and dest (``prefix="proxy"``: ``--proxy-steps``,
            dest ``proxy__steps``); pass the same to :func:`config_from_args`.
        exclude: field names (``"lr"``; ``"proxy.batch_size"`` inside a nested config) to leave
            without a flag, e.g. ones the command sets itself: pass them to
            :func:`config_from_args` as overrides, or they keep their defaults.

    Raises:
        TypeError: a field has no ``help`` metadata, a type or metadata without a flag, or a
            default not among its choices.
        argparse.ArgumentError: a flag clashes with one ``parser`` already has.
    """
    root = _norm_prefix(prefix)
    exclude = {exclude} if isinstance(exclude, str) else set(exclude)
    unknown = sorted(exclude - set(_paths(cls)))
    if unknown:
        raise TypeError(f"add_config_arguments: exclude names no field of {cls.__qualname__}: {', '.join(unknown)}")
    _add(parser, parser, cls, root, (), tuple(_flag_part(p) for p in root), None, exclude)


def _paths(cls, rel: str = ""):
    """The dotted path of every init field of ``cls``, nested configs' fields included."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.init:
            yield rel + f.name
            t = hints[f.name]
            if isinstance(t, type) and dataclasses.is_dataclass(t):
                yield from _paths(t, rel + f.name + ".")


def _add(container, root_parser, cls, path: tuple, rel: tuple, flag_path: tuple, defaults, exclude: set) -> None:
    for f, spec, p, r, default in _walk(cls, path, rel, defaults, exclude):
        md = f.metadata
        where = f"{cls.__qualname__}.{f.name}"
        help_text = md.get("help")
        if not isinstance(help_text, str) or not help_text.strip():
            raise TypeError(f"{where} has no help: document it with field(metadata={{'help': '...'}}) "
                            f"or leave it off the command line with metadata {{'cli': False}}")
        flag = md.get("flag")
        if flag is not None and (not isinstance(flag, str) or not flag.startswith("--") or len(flag) < 3):
            raise TypeError(f"{where}: metadata 'flag' must be a long option like '--name', got {flag!r}")
        name_part = flag[2:] if flag else _flag_part(f.name)

        if spec.kind == "nested":
            for key in ("choices", "negate", "metavar"):
                if key in md:
                    raise TypeError(f"{where}: metadata {key!r} does not apply to a nested config")
            sub_defaults = None if default is _MISSING else default
            if sub_defaults is not None and not isinstance(sub_defaults, spec.base):
                raise TypeError(f"{where}: default {sub_defaults!r} is not a {spec.base.__qualname__}")
            group = container
            if isinstance(container, argparse.ArgumentParser):
                title = "--" + "-".join(flag_path + (name_part,)) + "-* flags"
                group = root_parser.add_argument_group(title, help_text.replace("%", "%%"))
            _add(group, root_parser, spec.base, p, r, flag_path + (name_part,), sub_defaults, exclude)
            continue

        kwargs: dict = {"dest": _dest(p)}
        required = default is _MISSING
        choices = md.get("choices", spec.choices)
        if spec.kind == "bool":
            for key in ("choices", "metavar"):
                if key in md:
                    raise TypeError(f"{where}: metadata {key!r} does not apply to a bool")
            if required:
                raise TypeError(f"{where}: a bool needs a default to be a switch")
            if md.get("negate") and default is not True:
                raise TypeError(f"{where}: 'negate' needs the default True (its flag sets False)")
            if default is True:  # the flag turns it off: --no-name, or the name metadata 'flag' gives
                option = "--" + ("" if flag else "no-") + "-".join(flag_path + (name_part,))
                kwargs.update(action="store_false", default=True)
            else:
                option = "--" + "-".join(flag_path + (name_part,))
                kwargs.update(action="store_true", default=False)
        else:
            if "negate" in md:
                raise TypeError(f"{where}: 'negate' applies to bool fields only")
            option = "--" + "-".join(flag_path + (name_part,))
            kwargs["type"] = spec.base
            if spec.kind == "seq":
                if spec.length is not None:
                    kwargs["nargs"] = spec.length
                else:
                    kwargs["nargs"] = "*" if (default is not _MISSING and default is not None and len(default) == 0) \
                        else "+"
            if choices is not None:
                if isinstance(choices, (str, bytes)) or not isinstance(choices, collections.abc.Sequence) or not choices:
                    raise TypeError(f"{where}: metadata 'choices' must be a non-empty sequence, got {choices!r}")
                choices = tuple(choices)
                kwargs["choices"] = choices
                values = default if spec.kind == "seq" and default not in (_MISSING, None) else [default]
                if default is not _MISSING and default is not None and any(v not in choices for v in values):
                    raise TypeError(f"{where}: default {default!r} is not one of {list(choices)}")
            metavar = md.get("metavar")
            if metavar is None and choices is None:
                metavar = name_part.replace("-", "_").upper()
            if metavar is not None:
                kwargs["metavar"] = metavar
            if required:
                kwargs["required"] = True
            else:
                kwargs["default"] = default
        text = help_text.replace("%", "%%")
        if required:
            text += " (required)"
        elif spec.kind == "bool" and default is True and not flag:  # --no-name; the help tells the setting
            text += " (default: on; this flag turns it off)"
        elif spec.kind == "bool":  # a switch of its own (--verbose, --quiet): the help tells the flag
            text += " (default: off)"
        elif not _says_default(help_text, default):
            text += " (default: " + _show(default, spec).replace("%", "%%") + ")"
        kwargs["help"] = text + _ALWAYS_APPEND
        container.add_argument(option, **kwargs)


def config_from_args(cls, args: argparse.Namespace, *, prefix: str = "", **overrides):
    """The ``cls`` instance the flags :func:`add_config_arguments` added say, from the parsed
    ``args``; nested configs are rebuilt. A field without a flag (``exclude``, ``cli: False``)
    keeps its default unless it is among ``overrides``, which win over the flags: a value, or for
    a nested config an instance (used as is) or a dict of its fields (applied over its flags).

    Raises:
        TypeError: an override names no field of ``cls``, or a field without a default has
            neither a flag in ``args`` nor an override.
    """
    return _build(cls, args, _norm_prefix(prefix), None, overrides)


def _build(cls, args, path: tuple, defaults, overrides: dict):
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"config_from_args: {cls.__qualname__} has no field {', '.join(map(repr, unknown))}")
    kwargs: dict = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        p = path + (f.name,)
        override = overrides.get(f.name, _MISSING)
        if f.metadata.get("cli", True) is False:
            spec = None
        else:
            try:
                spec = _spec(cls, f.name, hints[f.name])
            except TypeError:
                if override is _MISSING and not hasattr(args, _dest(p)):
                    spec = None  # no flag could have been made; it keeps its default
                else:
                    raise
        if spec is not None and spec.kind == "nested":
            if override is not _MISSING and not isinstance(override, dict):
                kwargs[f.name] = override
                continue
            sub_defaults = getattr(defaults, f.name) if defaults is not None else _field_default(f)
            sub_defaults = None if sub_defaults is _MISSING else sub_defaults
            if override is _MISSING and not _has_any(args, p):
                if defaults is not None:
                    kwargs[f.name] = sub_defaults
                continue  # no flag of it was added: the field's own default applies
            kwargs[f.name] = _build(spec.base, args, p, sub_defaults, override if override is not _MISSING else {})
            continue
        if override is not _MISSING:
            kwargs[f.name] = override
            continue
        dest = _dest(p)
        if spec is not None and hasattr(args, dest):
            value = getattr(args, dest)
            if spec.kind == "seq" and value is not None:
                value = spec.container(value)
            kwargs[f.name] = value
        elif defaults is not None:
            kwargs[f.name] = getattr(defaults, f.name)  # a nested config's default instance holds it
        elif _field_default(f) is _MISSING:
            raise TypeError(f"config_from_args: {cls.__qualname__}.{f.name} has no default and no flag "
                            f"(--{'-'.join(map(_flag_part, p))}) in the parsed arguments; pass it as an override")
    return cls(**kwargs)


def _has_any(args, path: tuple) -> bool:
    """Whether ``args`` holds a flag of any field of the (nested) config ``cls`` at ``path``."""
    start = _dest(path) + "__"
    return any(k.startswith(start) for k in vars(args))
