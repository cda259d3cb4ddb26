"""``nasx runs list DIR``, ``nasx runs compare RUN_A RUN_B``, ``nasx runs report RUN``: searches
side by side, and a run's report.html (re)written — of a running search too."""
from __future__ import annotations

from pathlib import Path

__all__ = ["register"]


def _require_run(run: Path) -> None:
    from nasx.pipelines.runs import find_runs

    if find_runs(run) != [Path(run)]:
        raise ValueError(f"{run} is not a run directory (no config.json)")


def _list(args) -> int:
    from nasx.pipelines.runs import find_runs, run_summary

    runs = [run_summary(r) for r in find_runs(args.dir)]
    if not runs:
        print(f"no run directories (with config.json) in {args.dir}")
        return 0
    width = max(len(r["run"]) for r in runs)
    print(f"{'run':<{width}}  {'pipeline':<9} {'status':<11} {'archs':>5}  {'best':<12} {'minutes':>7}")
    for r in runs:
        print(f"{r['run']:<{width}}  {r['pipeline']:<9} {r['status']:<11} {r['archs']:>5}  {r['best'] or '-':<12} "
              f"{r['minutes']:>7.1f}")
    return 0


def _compare(args) -> int:
    from nasx.pipelines.runs import compare_plot, settings_diff

    for run in (args.run_a, args.run_b):
        _require_run(run)
    out = args.out or Path(args.run_a).parent / f"compare_{Path(args.run_a).name}_{Path(args.run_b).name}.png"
    diff = settings_diff(args.run_a, args.run_b)
    print(f"settings that differ ({len(diff)}):" if diff else "the settings are the same")
    for key, (a, b) in diff.items():
        print(f"  {key}: {a!r} -> {b!r}")
    print(f"both fronts: {compare_plot(args.run_a, args.run_b, out)}")
    return 0


def _report(args) -> int:
    from nasx.pipelines.html_report import write_html_report

    for run in args.runs:
        _require_run(run)
        print(write_html_report(run))
    return 0


def _floats(text: str) -> tuple:
    return tuple(float(v) for v in text.split(","))


def _ints(text: str) -> tuple:
    return tuple(int(v) for v in text.split(","))


def _proxy_study(args) -> int:
    from nasx.atomic import write_json, write_text
    from nasx.pipelines.proxy_study import StudyGrid, format_study, proxy_study, study_plot

    for run in args.runs:
        _require_run(run)
    grid = StudyGrid(steps=args.steps, lrs=args.lr, polyaks=args.polyak, val_images=args.val_images,
                     rewards=tuple(args.reward.split(",")), seeds=args.seeds)
    out = args.out or Path(args.runs[0]).parent / "proxy-study"
    study = proxy_study(args.runs, mode=args.mode, grid=grid, workers=args.workers, retrain_seeds=args.retrain_seeds,
                        retrain_steps=args.retrain_steps, out=out)
    table = format_study(study)
    write_json(out / "study.json", study)
    write_text(out / "study.md", table)
    print(table)
    print(f"study: {out / 'study.json'}, {out / 'study.md'}, {study_plot(study, out / 'study.png')}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list search runs and their status; compare two runs")
    sub = p.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="one line per run: pipeline, status (running / interrupted / done), "
                                     "architectures, best, minutes")
    ls.add_argument("dir", type=Path, metavar="DIR", help="a run directory or a folder of them")
    ls.set_defaults(func=_list)
    cmp = sub.add_parser("compare", help="the settings that differ and both Pareto fronts on one plot")
    cmp.add_argument("run_a", type=Path, metavar="RUN_A")
    cmp.add_argument("run_b", type=Path, metavar="RUN_B")
    cmp.add_argument("--out", type=Path, default=None, metavar="PNG",
                     help="plot file (default: compare_<A>_<B>.png beside RUN_A)")
    cmp.set_defaults(func=_compare)
    rep = sub.add_parser("report", help="(re)write RUN/report.html: one self-contained page with the settings, "
                                        "plots, every architecture (sortable) and the retraining")
    rep.add_argument("runs", type=Path, nargs="+", metavar="RUN")
    rep.set_defaults(func=_report)
    st = sub.add_parser("proxy-study", help="NAS-FCOS: Kendall tau against retrained mAP of other proxy settings "
                                            "(steps, lr, Polyak decay, meta-val size, reward, seeds), on the "
                                            "decoders finished runs retrained")
    st.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="finished NAS-FCOS runs")
    st.add_argument("--mode", default="classifier", choices=("classifier", "scratch", "inherit"),
                    help="whose retrained mAP is the truth (--final-init of the retraining; default classifier)")
    st.add_argument("--out", type=Path, default=None, help="where study.json / .md / .png go (default: "
                                                           "proxy-study/ beside the first run)")
    st.add_argument("--workers", type=int, default=2, help="trainings at a time (default 2)")
    st.add_argument("--steps", type=_ints, default=(30, 60, 120), help="proxy steps tried (default 30,60,120)")
    st.add_argument("--lr", type=_floats, default=(1e-3, 2e-3, 4e-3), help="learning rates (default 1e-3,2e-3,4e-3)")
    st.add_argument("--polyak", type=_floats, default=(0.0, 0.95, 0.99), help="Polyak decays (default 0,0.95,0.99)")
    st.add_argument("--val-images", type=_ints, default=(50, 100, 0),
                    help="meta-val sizes, prefixes of a shuffled meta-val (0: all; default 50,100,0)")
    st.add_argument("--reward", default="loss,map", help="rewards: loss, map (default both)")
    st.add_argument("--seeds", type=_ints, default=(0, 1), help="seeds; the run's learning rate is trained with "
                                                               "each, their mean reward is a setting (default 0,1)")
    st.add_argument("--retrain-seeds", type=_ints, default=(), metavar="S[,S...]",
                    help="retrain the decoders again from these seeds (minutes each); the truth becomes the mean "
                         "mAP of the retrainings and the tau between two of them is the ceiling of any proxy")
    st.add_argument("--retrain-steps", type=int, default=None, metavar="N",
                    help="with --retrain-seeds: retrain for N steps (default: the run's own; other steps leave "
                         "the run's retraining out of the truth)")
    st.set_defaults(func=_proxy_study)
