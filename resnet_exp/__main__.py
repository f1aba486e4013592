"""Command line: ``python -m resnet_exp {models,run,report,bench,make-mini}``.

Each subcommand is a thin shell over one module; heavy imports happen inside them.
"""

from __future__ import annotations

import argparse
import sys


def cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models, model_info

    names = args.names or list_models()
    rows = [model_info(n) for n in names]
    print(f"| {'name':<20} | {'depth':>5} | {'shortcut':>8} | {'input':>7} | {'params':>12} | {'GFLOPs/img':>10} |")
    print(f"|{'-' * 22}|{'-' * 7}|{'-' * 10}|{'-' * 9}|{'-' * 14}|{'-' * 12}|")
    for r in rows:
        print(f"| {r['name']:<20} | {r['depth']:>5} | {r['shortcut'] or '-':>8} | {r['input']:>7} | "
              f"{r['params']:>12,} | {r['flops'] / 1e9:>10.3f} |")
    print("\nFLOPs: forward pass of one image, multiply-add counted as 2 (torch.utils.flop_counter).")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_experiments

    return run_experiments(args.experiments, profile=args.profile, only=args.only, data=args.data,
                           results=args.results, device=args.device, include_opt_in=args.include_opt_in,
                           dry_run=args.dry_run)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_reports

    index = build_reports(results=args.results, out=args.out, experiments_dir=args.experiments_dir)
    print(f"reports written; open {index}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    run_bench(models=args.models, iters=args.iters, device=args.device, out=args.out,
              batch_size=args.batch_size, workers=args.workers, data=args.data)
    return 0


def cmd_make_mini(args: argparse.Namespace) -> int:
    from .data import make_mini_subset

    path = make_mini_subset(args.source, args.out, args.train_per_class, args.test_per_class)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resnet_exp", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="table of the registered networks")
    m.add_argument("names", nargs="*", help="model names (default: every listed model)")
    m.set_defaults(func=cmd_models)

    r = sub.add_parser("run", help="train the runs of experiment files")
    r.add_argument("experiments", nargs="+", help="experiment files, e.g. experiments/figure6.yaml")
    r.add_argument("--profile", default=None, help="recipe profile: paper, quick, smoke (default: "
                   "the file's, else paper on CUDA and quick elsewhere)")
    r.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only these rows (row names; opt-in rows are included when named)")
    r.add_argument("--data", default=None, help="CIFAR-10 source: a folder or archive "
                   "(default: $RESNET_EXP_DATA, else data/ with torchvision's download)")
    r.add_argument("--results", default="results", help="results folder (default: results/)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--include-opt-in", action="store_true", help="also run rows marked opt_in")
    r.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="execute the notebooks and write HTML reports")
    rep.add_argument("--results", default="results")
    rep.add_argument("--out", default="reports")
    rep.add_argument("--experiments-dir", default="experiments")
    rep.set_defaults(func=cmd_report)

    b = sub.add_parser("bench", help="training images/s: our step vs a textbook loop")
    b.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "resnet110", "plain56"])
    b.add_argument("--iters", type=int, default=50)
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--workers", type=int, default=None, help="textbook DataLoader workers")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--data", default=None, help="CIFAR-10 source (default: data/, else synthetic images)")
    b.add_argument("--out", default=None, help="JSON output (default benchmarks/results/bench-<device>.json)")
    b.set_defaults(func=cmd_bench)

    mm = sub.add_parser("make-mini", help="build the bundled mini CIFAR-10 subset from an image-folder archive")
    mm.add_argument("source")
    mm.add_argument("--out", default="assets/cifar10-mini-jpeg.tar.gz")
    mm.add_argument("--train-per-class", type=int, default=1000)
    mm.add_argument("--test-per-class", type=int, default=200)
    mm.set_defaults(func=cmd_make_mini)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted; finished work is kept and interrupted runs resume from their "
              "last checkpoint on the next invocation", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
