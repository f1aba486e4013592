"""Command line: ``python -m resnet_exp {models,run,report,claims,compare,publish,...}``.

Each subcommand is a thin shell over one module; heavy imports happen inside them.
"""

from __future__ import annotations

# The stop policy first, before any other import: Ctrl-C or SIGTERM at any moment from here
# on ends the command with one line and exit 130/143, never a traceback (stopping.py).
from . import stopping

stopping.install()

import argparse  # noqa: E402
import sys  # noqa: E402


def results_folder(path: str) -> None:
    """A command that reads results needs the folder: say so, and how to get one."""
    from pathlib import Path

    if not Path(path).is_dir():
        raise FileNotFoundError(f"--results {path}: no such folder; train first (./run_all.sh or python -m "
                                "resnet_exp run ...) or point --results at a results folder (a fresh clone has "
                                "reports/reference/cpu-quick/results)")


def cmd_models(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .models import FAMILIES, list_models, model_info, parse_model_name
    from .models.plugins import load_plugins

    plugins = load_plugins(args.plugins, Path.cwd())  # a bad plug-in: one line naming it, exit 2
    names = args.names or ([n for n in list_models() if parse_model_name(n)[0].origin != "built-in"]
                           if plugins and not args.all else list_models())
    rows = [model_info(n) for n in names]
    print(f"| {'name':<22} | {'depth':>5} | {'shortcut':>8} | {'input':>7} | {'params':>12} | {'GFLOPs/img':>10} | what")
    print(f"|{'-' * 24}|{'-' * 7}|{'-' * 10}|{'-' * 9}|{'-' * 14}|{'-' * 12}|{'-' * 6}")
    for r in rows:
        print(f"| {r['name']:<22} | {r['depth']:>5} | {r['shortcut'] or '-':>8} | {r['input']:>7} | "
              f"{r['params']:>12,} | {r['flops'] / 1e9:>10.3f} | {FAMILIES[r['family']].description}")
    print("\nFLOPs: forward pass of one image, multiply-add counted as 2 (torch.utils.flop_counter).")
    for p in plugins:
        print(f"plug-in {p.name}: {p.path}, sha256 {p.sha256[:12]}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    stopping.pause_for_test("imports")  # before torch and the rest are imported
    from .runs.planning.budget import parse_budget
    from .runs.planning.experiments import select_runs

    budget = parse_budget(args.budget) if args.budget is not None else None  # a bad one: one line, exit 2

    # every file and row is checked before torch is imported: a mistake is reported at once
    for profile in [args.profile] if args.profile else ["paper", "quick"]:
        select_runs(args.experiments, profile, args.only, args.include_opt_in, args.precision)
    if args.check:
        print(f"{', '.join(args.experiments)}: every row is valid")
        return 0
    from .reporting.claims import known_to_show
    from .reporting.reference import bf16_verdict, coverage, verdict_of_run
    from .runs.executing.runner import ExecutorChoice, run_experiments

    choice = ExecutorChoice(kind=args.executor, workers=args.workers, gpus=args.gpus, runs_per_gpu=args.runs_per_gpu,
                            ray_address=args.ray_address, ray_storage=args.ray_storage,
                            cpus_per_run=args.cpus_per_run, threads=args.threads)
    return run_experiments(args.experiments, profile=args.profile, only=args.only, data=args.data,
                           data_dir=args.data_dir,
                           results=args.results, device=args.device, include_opt_in=args.include_opt_in,
                           dry_run=args.dry_run, executor=choice, left_out=args.left_out,
                           left_out_hint=args.left_out_hint, retrain_damaged=args.retrain_damaged,
                           budget=budget, known_to_show=known_to_show, precision=args.precision,
                           bf16_verdict=bf16_verdict, verdict=verdict_of_run,
                           needs_reference=args.needs_reference, coverage=coverage)


def cmd_report(args: argparse.Namespace) -> int:

    results_folder(args.results)
    from .reporting.build import build_reports

    index = build_reports(results=args.results, out=args.out, experiments_dir=args.experiments_dir)
    print(f"reports written; open {index}")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    import json

    results_folder(args.results)
    from .reporting.claims import claims_for, claims_text

    claims, notes = claims_for(args.results)
    if args.json:
        print(json.dumps({"results": args.results, "claims": [c.as_dict() for c in claims], "notes": notes},
                         indent=2))
    else:
        print(claims_text(claims, notes))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """The end of ./run_all.sh: the claims one line each, what this invocation trained with its
    verdicts, and where the reports are. Last on the terminal, so it is what a person sees."""
    from pathlib import Path

    results_folder(args.results)
    from .reporting.claims import claims_brief, claims_for
    from .reporting.results import last_job

    claims, _ = claims_for(args.results)
    print(f"The paper's claims on {args.results} (the numbers: python -m resnet_exp claims --results {args.results}):")
    print("\n".join(claims_brief(claims)))
    ends = [e for e in last_job(args.results) if e.get("event") == "end"]
    print(f"\nTrained by the last run ({len(ends)} run{'s' if len(ends) != 1 else ''}; every event: "
          f"{Path(args.results) / 'progress.jsonl'}):" if ends else "\nNothing was trained by the last run.")
    for e in ends:
        errors = (f"train {e['train_error']:.2f} % / test {e['test_error']:.2f} %"
                  if isinstance(e.get("train_error"), (int, float)) and isinstance(e.get("test_error"), (int, float))
                  else "")
        verdict = f"; reference: {e['verdict']}" if e.get("verdict") else ""
        print(f"  {str(e.get('run')):<32} {str(e.get('status')):<12} {errors}{verdict}")
    index = Path(args.out) / "index.html"
    if index.exists():
        print(f"\nReports: {index.resolve()} (and figure1.html, figure6.html, ... beside it)")
    return 0


def cmd_ablations(args: argparse.Namespace) -> int:
    import json

    results_folder(args.results)
    from .reporting.ablations import ablation_rows, ablations_json, ablations_text
    from .reporting.results import load_results

    rows = ablation_rows(load_results(args.results), args.experiments_dir)
    print(json.dumps(ablations_json(rows), indent=2, default=str) if args.json else ablations_text(rows))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .runs.bench import run_bench, run_concurrent_bench

    if args.concurrent:
        run_concurrent_bench(models=args.models, ks=args.concurrent, iters=args.iters, device=args.device,
                             profile=args.profile, out=args.out, mode=(args.modes or ["graph"])[0])
    else:
        run_bench(models=args.models, iters=args.iters, device=args.device, out=args.out, profile=args.profile,
                  workers=args.workers, data=args.data, modes=args.modes)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data.cifar10 import DatasetError, load_cifar10

    try:
        ds = load_cifar10(args.data, data_dir=args.data_dir, verbose=False)
    except DatasetError as e:  # an expected condition (no network, say): its message, no traceback
        print(e, file=sys.stderr)
        return 2
    p = ds.provenance
    print(f"{p['name']}: {p['n_train']:,} train / {p['n_test']:,} test images from {p['path']} "
          f"(sha256 {p['sha256'][:16]}...)" + (f"\nWARNING: {p['warning']}" if p.get("warning") else ""))
    return 0


def cmd_responses(args: argparse.Namespace) -> int:
    from .runs.training.responses import update_responses

    n = update_responses(args.results, data=args.data, data_dir=args.data_dir, device=args.device)
    print(f"{n} run(s) needed responses.csv" if n else "every finished run's responses.csv is current")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .runs.rundir import RunDir, lighten, publish_results

    results_folder(args.source)
    if Path(args.source).resolve() == Path(args.dest).resolve():  # in place: only drop the weights
        n = sum(lighten(run) for run in RunDir.all_in(args.source))
        print(f"{n} run(s) made light (model.pt removed, its sha256 and size kept in meta.json)")
        return 0
    n = publish_results(args.source, args.dest, only_done=not args.all, weights=True if args.weights else None)
    print(f"published {n} run(s) to {args.dest}" + ("" if args.weights else
          " (light: model.pt left out below the paper's schedule, its sha256 and size kept in meta.json)"))
    return 0


def add_publish_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    pb = sub.add_parser("publish", help="copy finished runs into a reference folder: no checkpoints, no machine "
                        "paths, and no model.pt below the paper's schedule", formatter_class=fmt,
                        epilog="examples: python -m resnet_exp publish results reports/reference/quick16-bf16/results; "
                               "the same folder twice makes its runs light in place")
    pb.add_argument("source", help="results folder to copy from")
    pb.add_argument("dest", help="reference results folder to copy into (the same as source: lighten in place)")
    pb.add_argument("--all", action="store_true", help="also the runs still to train (default: finished and "
                    "diverged runs only)")
    pb.add_argument("--weights", action="store_true", help="keep model.pt for every run (default: only for the "
                    "paper's full schedule)")
    pb.set_defaults(func=cmd_publish)


def cmd_make_mini(args: argparse.Namespace) -> int:
    from .data.cifar10 import make_mini_subset

    path = make_mini_subset(args.source, args.out, args.train_per_class, args.test_per_class)
    print(f"wrote {path}")
    return 0


def add_models_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    m = sub.add_parser("models", help="table of the registered networks", formatter_class=fmt,
                       epilog="example: python -m resnet_exp models resnet56 plain56")
    m.add_argument("names", nargs="*", help="model names (default: every listed model)")
    m.add_argument("--plugins", nargs="+", default=[], metavar="F",
                   help="plug-in files (.py) or modules to import first; lists their models (with --all, every model)")
    m.add_argument("--all", action="store_true", help="with --plugins: the built-in models too")
    m.set_defaults(func=cmd_models)


def add_run_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    r = sub.add_parser("run", help="train the runs of experiment files", formatter_class=fmt,
                       epilog="examples: python -m resnet_exp run experiments/figure1.yaml --profile quick; "
                              "... --workers 2 (two runs at once on the CPU); ... --gpus all --runs-per-gpu 4; "
                              "... --executor ray --ray-address auto")
    r.add_argument("experiments", nargs="+", help="experiment files, e.g. experiments/figure6.yaml")
    r.add_argument("--profile", default=None, help="recipe profile: paper, quick, smoke (default: "
                   "the file's, else paper on CUDA and quick elsewhere)")
    r.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only these rows (row names; opt-in rows are included when named)")
    r.add_argument("--data", default=None, help="CIFAR-10 source: a folder or archive "
                   "(default: $RESNET_EXP_DATA, else data/ with torchvision's download)")
    r.add_argument("--results", default="results", help="results folder (default: results/)")
    r.add_argument("--data-dir", default="data", help="where torchvision's download and the decoded cache live")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train (auto: CUDA if any)")
    r.add_argument("--include-opt-in", action="store_true", help="also run rows marked opt_in")
    r.add_argument("--precision", default=None, choices=["fp32", "tf32", "bf16"],
                   help="arithmetic of every run, over the profile's (default: fp32; a budget on a CPU with native "
                        "bf16 chooses bf16 where the references showed it gives fp32's answer)")
    r.add_argument("--dry-run", action="store_true", help="print the plan and stop; writes nothing")
    r.add_argument("--budget", default=None, metavar="TIME",
                   help="training time you have (90s, 45m, 2h, 1h30m): the longest rung of the ladder "
                        "(runs/planning/ladder.yaml) whose estimate fits chooses the schedule; --profile wins over it")
    r.add_argument("--needs-reference", action="store_true",
                   help="with --budget: choose among the rungs whose committed reference holds every selected net "
                        "with 3 seeds in the precision trained (./run_all.sh's CPU default); a longer rung that fits "
                        "without one is named")
    r.add_argument("--check", action="store_true", help="only validate the experiment files (no torch, no data)")
    r.add_argument("--retrain-damaged", action="store_true",
                   help="train damaged runs again (their folders are moved to <results>/.damaged/, kept)")
    r.add_argument("--left-out", nargs="+", default=None, metavar="FILE",
                   help="experiment files left out on purpose: the plan lists them with their cost here")
    r.add_argument("--left-out-hint", default="", help="how to run the left-out files (printed with them)")
    r.add_argument("--executor", default="auto", choices=["auto", "local", "pool", "ray"],
                   help="auto: with CUDA a pool over every GPU (--runs-per-gpu on each), else local; local: one "
                        "run after another; pool: several processes (--workers / --gpus); ray: Ray tasks on this "
                        "machine or a cluster")
    r.add_argument("--workers", type=int, default=1, help="pool on the CPU: runs at a time (threads split)")
    r.add_argument("--gpus", default=None, help="pool on GPUs: 'all' or indices such as 0,1,3")
    r.add_argument("--runs-per-gpu", type=int, default=None,
                   help="runs sharing each GPU (pool and ray; default 4: where sharing stops paying on an H200, "
                        "runs/device.py)")
    r.add_argument("--ray-address", default=None,
                   help="ray: none starts a local instance; 'auto' or ray://host:port joins a cluster")
    r.add_argument("--ray-storage", default="auto", choices=["auto", "shared", "driver"],
                   help="ray: shared: every node reads and writes the results folder (a shared filesystem); "
                        "driver: runs train in node-local scratch and their files come back to the driver "
                        "through Ray; auto: shared where every node sees the results folder and the data")
    r.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs each run reserves")
    r.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: the CPUs divided by the runs at a time); on the CPU "
                        "results depend on it, so fix it to compare executors bit for bit")
    r.set_defaults(func=cmd_run)


def add_reading_args(p: argparse.ArgumentParser, experiments_dir: str | None = None, json: bool = False) -> None:
    """The options of the commands that read a results folder (report, claims, ablations)."""
    p.add_argument("--results", default="results", help="results folder to read")
    if experiments_dir:
        p.add_argument("--experiments-dir", default="experiments", help=experiments_dir)
    if json:
        p.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_report_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    rep = sub.add_parser("report", help="execute the notebooks and write HTML reports", formatter_class=fmt,
                         epilog="example: python -m resnet_exp report --results results-mini --out reports")
    add_reading_args(rep, experiments_dir="experiment files the reports expect")
    rep.add_argument("--out", default="reports", help="where the HTML reports go")
    rep.set_defaults(func=cmd_report)


def add_claims_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    c = sub.add_parser("claims", help="which of the paper's claims hold on a results folder, with the numbers",
                       formatter_class=fmt,
                       epilog="example: python -m resnet_exp claims --results reports/reference/cpu-quick/results")
    add_reading_args(c, json=True)
    c.set_defaults(func=cmd_claims)


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    if args.precisions:
        return print_precisions(args.json)
    results_folder(args.results)
    if args.reference:
        results_folder(args.reference)
    from .reporting.reference import compare, load_reference, missing_sentence, shown, without_reference
    from .reporting.results import load_results

    res = load_results(args.results)
    ref = load_reference(res, args.reference)
    found, missing = compare(res, ref), without_reference(res, ref)
    if args.json:
        print(json.dumps({"results": args.results, "reference": shown(ref.results_dir) if ref else None,
                          "runs": [c.as_dict() for c in found], "without_reference": missing}, indent=2))
    elif ref is None:
        print(f"{args.results}: no committed reference of its schedule on its dataset (runs/planning/ladder.yaml lists "
              "them; pass one with --reference)")
    else:
        print(f"Your runs beside the reference {shown(ref.results_dir)}:")
        for c in found:
            print(f"  - {c.sentence()}")
        if not found:
            print("  (the reference has no finished run of your rows)")
        elif missing:
            print(f"  {missing_sentence(missing)}")
    return 0


def print_precisions(as_json: bool) -> int:
    """``compare --precisions``: the committed bf16 references against the fp32 ones, net by net,
    the claims each precision's reference shows, and the budget's verdict."""
    import json

    from .reporting.claims import known_to_show
    from .reporting.reference import bf16_verdict, precision_rows
    from .runs.planning.ladder import load_ladder

    rows, (shown, evidence) = precision_rows(), bf16_verdict()
    rungs = [r for r in load_ladder() if r.reference_bf16]
    claims = {r.fraction: {p: known_to_show(r, p) for p in ("fp32", "bf16")} for r in rungs}
    if as_json:
        print(json.dumps({"rows": [{**r.__dict__, "within": r.within} for r in rows], "claims": claims,
                          "bf16_gives_fp32s_answer": shown, "evidence": evidence}, indent=2))
        return 0
    print("bf16 against fp32, the committed CPU references (runs/planning/ladder.yaml):")
    for r in rows:
        print(f"  - {r.sentence()}")
    for fraction, by in claims.items():
        for p, text in by.items():
            print(f"  {fraction} {p} shows: {text}")
    print(f"verdict: {'bf16 gives' if shown else 'not shown that bf16 gives'} fp32's answer: {evidence}")
    return 0


def add_summary_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    s = sub.add_parser("summary", help="the claims one line each, what the last run trained and its verdicts, "
                       "where the reports are (the end of ./run_all.sh)", formatter_class=fmt)
    add_reading_args(s)
    s.add_argument("--out", default="reports", help="where the HTML reports are")
    s.set_defaults(func=cmd_summary)


def add_compare_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    c = sub.add_parser("compare", help="your finished runs against the committed reference of the same schedule: "
                       "within its seed spread or not", formatter_class=fmt,
                       epilog="example: python -m resnet_exp compare --results results")
    add_reading_args(c, json=True)
    c.add_argument("--precisions", action="store_true",
                   help="the committed bf16 references against the fp32 ones (no --results needed)")
    c.add_argument("--reference", default=None, help="a reference results folder (default: the committed one "
                   "of the runs' profile, runs/planning/ladder.yaml)")
    c.set_defaults(func=cmd_compare)


def add_ablations_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    a = sub.add_parser("ablations", help="every ablation row against its baseline: differences with 95 %% "
                       "intervals over seeds, and verdicts", formatter_class=fmt,
                       epilog="example: python -m resnet_exp ablations --results results --json")
    add_reading_args(a, experiments_dir="where ablations.yaml is (for the hints)", json=True)
    a.set_defaults(func=cmd_ablations)


def add_bench_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    b = sub.add_parser("bench", help="training images/s: our step vs a textbook loop", formatter_class=fmt,
                       epilog="examples: python -m resnet_exp bench --iters 10; "
                              "python -m resnet_exp bench --models resnet20 --concurrent 1 2")
    b.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "resnet110", "plain56"],
                   help="networks to time")
    b.add_argument("--iters", type=int, default=50, help="timed iterations per measurement")
    b.add_argument("--profile", default="paper", help="recipe (batch size, precision, SGD) from profiles.yaml")
    b.add_argument("--workers", type=int, default=None, help="textbook DataLoader workers (default: min(8, CPUs))")
    b.add_argument("--concurrent", type=int, nargs="+", default=None, metavar="K",
                   help="instead: total images/s of K runs at once on one device, for each K")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    b.add_argument("--modes", nargs="+", default=None, choices=["eager", "graph", "bf16", "graph-tf32", "graph-bf16"],
                   help="step modes to time (runs/training/step.py; default: eager and graph on CUDA, eager (fp32) and bf16 on a CPU); --concurrent uses the first")
    b.add_argument("--data", default=None, help="CIFAR-10 source (default: data/, else synthetic images)")
    b.add_argument("--out", default=None, help="JSON output (default benchmarks/results/bench-<device>.json)")
    b.set_defaults(func=cmd_bench)


def add_data_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    d = sub.add_parser("data", help="find, check and cache CIFAR-10; say where it came from", formatter_class=fmt,
                       epilog="example: python -m resnet_exp data --data cifar10-jpeg-q75.tar.gz")
    d.add_argument("--data", default=None, help="CIFAR-10 source (default: $RESNET_EXP_DATA, else data/)")
    d.add_argument("--data-dir", default="data", help="where torchvision's download and the cache live")
    d.set_defaults(func=cmd_data)


def cmd_device(args: argparse.Namespace) -> int:
    from .runs.device import pick_device

    print(pick_device("auto").type)
    return 0


def add_device_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    d = sub.add_parser("device", help="print the device `run --device auto` trains on: cuda or cpu",
                       formatter_class=fmt)
    d.set_defaults(func=cmd_device)


def add_responses_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    rs = sub.add_parser("responses", help="Figure 7: (re)compute responses.csv of finished runs lacking a current one",
                        formatter_class=fmt, epilog="example: python -m resnet_exp responses --results results")
    rs.add_argument("--results", default="results", help="results folder")
    rs.add_argument("--data", default=None, help="the CIFAR-10 source the runs trained on")
    rs.add_argument("--data-dir", default="data", help="where the data cache lives")
    rs.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run the forward passes")
    rs.set_defaults(func=cmd_responses)


def add_make_mini_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    mm = sub.add_parser("make-mini", help="build the bundled mini CIFAR-10 subset from an image-folder archive",
                        formatter_class=fmt, epilog="example: python -m resnet_exp make-mini cifar10-jpeg-q75.tar.gz")
    mm.add_argument("source", help="an image-folder tree or .tar.gz of CIFAR-10")
    mm.add_argument("--out", default="assets/cifar10-mini-jpeg.tar.gz", help="archive to write")
    mm.add_argument("--train-per-class", type=int, default=1000, help="training images per class")
    mm.add_argument("--test-per-class", type=int, default=200, help="test images per class")
    mm.set_defaults(func=cmd_make_mini)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="python -m resnet_exp", formatter_class=fmt,
                                description="Reproduce the degradation experiment of He et al. (2016).")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (add_models_parser, add_run_parser, add_report_parser, add_claims_parser, add_summary_parser,
                add_compare_parser, add_ablations_parser, add_bench_parser, add_data_parser, add_device_parser, add_responses_parser,
                add_publish_parser, add_make_mini_parser):
        add(sub, fmt)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        from .fileio import EXIT_NO_SPACE, is_no_space, no_space_message

        args = build_parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:  # a stop signal (stopping.py): one line, 130 or 143
        print("\n" + stopping.message(), file=sys.stderr)
        return stopping.exit_status()
    except OSError as e:
        if not is_no_space(e):
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(no_space_message(e.filename), file=sys.stderr)  # a full disk: one message, its own status
        return EXIT_NO_SPACE
    except ValueError as e:  # bad input: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    status = main()
    stopping.quiet()
    sys.exit(status)
