"""Flags generated from config dataclasses (nasx.pipelines.config_flags)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Tuple

import pytest

from nasx.pipelines.config_flags import add_config_arguments, config_from_args


def _h(text, **more):
    return {"help": text, **more}


@dataclass
class Inner:
    steps: int = field(default=60, metadata=_h("optimizer steps"))
    lr: float = field(default=2e-3, metadata=_h("learning rate"))
    latency: bool = field(default=True, metadata=_h("also time the detector"))


@dataclass
class Deep:
    inner: Inner = field(default_factory=Inner, metadata=_h("the innermost settings"))
    name: str = field(default="deep", metadata=_h("a name"))


@dataclass
class Run:
    data: Path = field(metadata=_h("dataset root", metavar="DIR"))
    out: str = field(metadata=_h("run directory"))
    budget_minutes: float = field(default=15.0, metadata=_h("wall-clock budget"))
    workers: int = field(default=1, metadata=_h("evaluating processes"))
    lr: Optional[float] = field(default=None, metadata=_h("learning rate (default: the optimizer's)"))
    weight_decay: Optional[float] = field(default=None, metadata=_h("weight decay (none: the optimizer's)"))
    max_archs: int | None = field(default=None, metadata=_h("stop after this many architectures"))
    optimizer: str = field(default="adamw", metadata=_h("optimizer", choices=("adamw", "sgd")))
    norm: Literal["gn", "bn"] = field(default="gn", metadata=_h("trunk norm"))
    meta_val_fraction: float = field(default=0.1, metadata=_h("held-out share (10%)", flag="--meta-val"))
    sizes: Tuple[int, ...] = field(default=(96, 128), metadata=_h("input sides"))
    mean: tuple[float, float, float] = field(default=(0.5, 0.5, 0.5), metadata=_h("pixel mean"))
    tags: list[str] = field(default_factory=list, metadata=_h("labels of the run"))
    verbose: bool = field(default=False, metadata=_h("more output"))
    cache: bool = field(default=True, metadata=_h("cache features"))
    progress: bool = field(default=True, metadata=_h("no progress output", flag="--quiet", negate=True))
    proxy: Inner = field(default_factory=lambda: Inner(steps=30), metadata=_h("the proxy task"))
    deep: Deep = field(default_factory=Deep, metadata=_h("nested twice"))
    internal: int = field(default=7, metadata={"cli": False})
    derived: int = field(default=0, init=False)


@dataclass
class Undocumented:
    fine: int = field(default=1, metadata=_h("documented"))
    bare: int = 2


@dataclass
class UndocumentedInside:
    inner: Undocumented = field(default_factory=Undocumented, metadata=_h("nested"))


REQUIRED = ["--data", "d", "--out", "o"]


def _parser(cls=Run, **kw):
    parser = argparse.ArgumentParser(prog="t", **kw)
    add_config_arguments(parser, cls)
    return parser


def _options(parser):
    return {o for a in parser._actions for o in a.option_strings} - {"-h", "--help"}


def test_every_field_gets_a_flag():
    assert _options(_parser()) == {
        "--data", "--out", "--budget-minutes", "--workers", "--lr", "--weight-decay", "--max-archs", "--optimizer", "--norm",
        "--meta-val", "--sizes", "--mean", "--tags", "--verbose", "--no-cache", "--quiet",
        "--proxy-steps", "--proxy-lr", "--no-proxy-latency",
        "--deep-inner-steps", "--deep-inner-lr", "--no-deep-inner-latency", "--deep-name",
    }


def test_defaults_round_trip():
    parser = _parser()
    cfg = config_from_args(Run, parser.parse_args(REQUIRED))
    assert cfg == Run(data=Path("d"), out="o")
    assert cfg.proxy == Inner(steps=30)  # the parent's default_factory, not Inner's own defaults
    assert isinstance(cfg.data, Path) and cfg.sizes == (96, 128) and cfg.tags == [] and cfg.internal == 7


def test_values_parse_into_the_config():
    args = _parser().parse_args(REQUIRED + [
        "--budget-minutes", "2.5", "--workers", "3", "--lr", "0.01", "--max-archs", "9", "--optimizer", "sgd",
        "--norm", "bn", "--meta-val", "0.2", "--sizes", "64", "--mean", "0.1", "0.2", "0.3", "--tags", "a", "b",
        "--verbose", "--no-cache", "--quiet", "--proxy-steps", "5", "--no-proxy-latency",
        "--deep-inner-lr", "0.5", "--deep-name", "x"])
    assert args.proxy__steps == 5 and args.deep__inner__lr == 0.5  # dests: the field path joined by __
    cfg = config_from_args(Run, args)
    assert cfg == Run(data=Path("d"), out="o", budget_minutes=2.5, workers=3, lr=0.01, max_archs=9,
                      optimizer="sgd", norm="bn", meta_val_fraction=0.2, sizes=(64,), mean=(0.1, 0.2, 0.3),
                      tags=["a", "b"], verbose=True, cache=False, progress=False,
                      proxy=Inner(steps=5, latency=False), deep=Deep(inner=Inner(lr=0.5), name="x"))
    assert isinstance(cfg.sizes, tuple) and isinstance(cfg.tags, list)


def test_optional_defaults_to_none():
    args = _parser().parse_args(REQUIRED)
    assert args.lr is None and args.max_archs is None
    assert config_from_args(Run, _parser().parse_args(REQUIRED + ["--max-archs", "4"])).max_archs == 4


def test_bool_switches():
    parser = _parser()
    on = config_from_args(Run, parser.parse_args(REQUIRED))
    assert (on.verbose, on.cache, on.progress) == (False, True, True)
    off = config_from_args(Run, parser.parse_args(REQUIRED + ["--verbose", "--no-cache", "--quiet"]))
    assert (off.verbose, off.cache, off.progress) == (True, False, False)
    with pytest.raises(SystemExit):
        parser.parse_args(REQUIRED + ["--progress"])
    with pytest.raises(SystemExit):
        parser.parse_args(REQUIRED + ["--cache"])


@pytest.mark.parametrize("argv", [["--optimizer", "adam"], ["--norm", "ln"], ["--workers", "two"],
                                  ["--mean", "1", "2"], ["--sizes"]])
def test_bad_values_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(REQUIRED + argv)
    assert info.value.code == 2 and argv[0] in capsys.readouterr().err


def test_required_fields_are_required_flags(capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["--data", "d"])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err


def test_help_shows_help_and_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "--budget-minutes BUDGET_MINUTES wall-clock budget (default: 15.0)" in text
    assert "--data DIR dataset root (required)" in text
    assert "--proxy-steps STEPS optimizer steps (default: 30)" in text
    assert "--meta-val META_VAL held-out share (10%) (default: 0.1)" in text
    assert "--max-archs MAX_ARCHS stop after this many architectures (default: none)" in text
    assert "learning rate (default: the optimizer's)" in text and "(default: the optimizer's) (" not in text
    assert "--optimizer {adamw,sgd} optimizer (default: adamw)" in text
    assert "--sizes SIZES [SIZES ...] input sides (default: 96 128)" in text
    assert "--verbose more output (default: off)" in text
    assert "--quiet no progress output (default: off)" in text
    assert "--no-proxy-latency also time the detector (default: on; this flag turns it off)" in text
    assert "--weight-decay WEIGHT_DECAY weight decay (none: the optimizer's) --" in text  # says what none is
    assert "the proxy task" in text and "--proxy-* flags" in text  # the nested config's group


def test_help_with_argument_defaults_formatter_shows_each_default_once(capsys):
    parser = _parser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "wall-clock budget (default: 15.0) --workers" in text


def test_missing_help_is_an_error():
    with pytest.raises(TypeError, match=r"Undocumented\.bare has no help"):
        _parser(Undocumented)
    with pytest.raises(TypeError, match=r"Undocumented\.bare has no help"):
        _parser(UndocumentedInside)
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Undocumented, exclude=("bare",))  # a field without a flag needs none
    assert config_from_args(Undocumented, parser.parse_args([])) == Undocumented()


def test_exclude_and_overrides():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Run, exclude=("out", "proxy.lr", "deep"))
    opts = _options(parser)
    assert "--out" not in opts and "--proxy-lr" not in opts and "--proxy-steps" in opts
    assert not any(o.startswith("--deep") for o in opts)
    args = parser.parse_args(["--data", "d", "--workers", "2", "--proxy-steps", "3"])
    with pytest.raises(TypeError, match="Run.out has no default"):
        config_from_args(Run, args)
    cfg = config_from_args(Run, args, out="o", workers=5, proxy={"latency": False})
    assert cfg == Run(data=Path("d"), out="o", workers=5, proxy=Inner(steps=3, lr=2e-3, latency=False))
    assert config_from_args(Run, args, out="o", proxy=Inner(steps=1)).proxy == Inner(steps=1)
    with pytest.raises(TypeError, match="no field 'nope'"):
        config_from_args(Run, args, out="o", nope=1)
    with pytest.raises(TypeError, match="exclude names no field"):
        add_config_arguments(argparse.ArgumentParser(), Run, exclude=("proxy.nope",))


def test_excluded_nested_field_keeps_the_parents_default():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Run, exclude=("proxy.steps",))
    cfg = config_from_args(Run, parser.parse_args(REQUIRED + ["--proxy-lr", "0.1"]))
    assert cfg.proxy == Inner(steps=30, lr=0.1)  # steps from Run's default_factory, not Inner's 60


def test_prefix():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Inner, prefix="proxy")
    add_config_arguments(parser, Inner, prefix="final")
    args = parser.parse_args(["--proxy-steps", "4", "--no-final-latency"])
    assert config_from_args(Inner, args, prefix="proxy") == Inner(steps=4)
    assert config_from_args(Inner, args, prefix="final") == Inner(latency=False)


def test_flag_clash_is_an_error():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers")
    with pytest.raises(argparse.ArgumentError):
        add_config_arguments(parser, Run)


@dataclass
class BadChoice:
    mode: str = field(default="c", metadata=_h("mode", choices=("a", "b")))


@dataclass
class BadNegate:
    on: bool = field(default=False, metadata=_h("x", negate=True))


@dataclass
class BadType:
    spec: dict = field(default_factory=dict, metadata=_h("a mapping"))


@dataclass
class BadUnion:
    value: int | str = field(default=1, metadata=_h("either"))


@pytest.mark.parametrize("cls, message", [
    (BadChoice, "default 'c' is not one of"), (BadNegate, "'negate' needs the default True"),
    (BadType, "no flag for type"), (BadUnion, "only Optional"), (int, "expected a dataclass")])
def test_configs_without_flags_are_errors(cls, message):
    with pytest.raises(TypeError, match=message):
        _parser(cls)


def test_a_field_without_a_flag_may_have_any_type():
    @dataclass
    class WithMapping:
        n: int = field(default=1, metadata=_h("count"))
        spec: dict = field(default_factory=dict, metadata={"cli": False})

    parser = _parser(WithMapping)
    assert _options(parser) == {"--n"}
    assert config_from_args(WithMapping, parser.parse_args(["--n", "2"])) == WithMapping(n=2)


def test_a_named_flag_of_a_bool_defaulting_to_true_turns_it_off():
    @dataclass
    class Keep:
        keep: bool = field(default=True, metadata=_h("drop the files", flag="--drop"))

    parser = _parser(Keep)
    assert _options(parser) == {"--drop"}
    assert config_from_args(Keep, parser.parse_args([])) == Keep()
    assert config_from_args(Keep, parser.parse_args(["--drop"])) == Keep(keep=False)
