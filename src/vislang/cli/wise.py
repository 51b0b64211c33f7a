"""``vislang wise``: WiSE-FT, the weight-space path from a zero-shot model to its fine-tune,
evaluated on a suite at every α, with the table, the figure and (optionally) the model at one α."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vislang.cli.common import add_encoding_options, add_quiet_option, add_set_option

EPILOG = """examples:
  vislang wise runs/clip runs/finetune --suite shift.yaml --out wise/
  vislang wise zs/ ft/ --suite shift.yaml --alphas 0,0.25,0.5,0.75,1 --id zeroshot/shape \\
      --shift zeroshot_sketch/shape zeroshot_texture/shape --out wise/ --export-alpha best
  vislang wise zs/ ft/ --export-alpha 0.5 --export-out model_0.5/     only the model at α = 0.5

ZERO_SHOT and FINETUNED are run directories, checkpoints, exports, or OpenCLIP or Hugging Face
folders of one architecture with one tokenizer. θ(α) = (1−α)·θ_zs + α·θ_ft for every
floating-point tensor (integer buffers come from FINETUNED). The ID task is --id (default: the
first result of the suite's task of role id, else its first result); the shifts are --shift
(default: the results of its tasks of role shift that match the ID's, as zeroshot_sketch/shape
matches zeroshot/shape; else every other result). Best α: the highest mean shift among the αs
whose ID metric is within --id-tolerance of the best ID.

writes: DIR/wise.csv, DIR/wise.md, DIR/wise.png (ID against mean shift, one point per α) and
DIR/alpha_<α>/, the usual suite results of each α (summary.md, one JSON per result, plots)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "wise",
        help="WiSE-FT: interpolate a zero-shot and a fine-tuned model, evaluate each α",
        description="Interpolate the weights of a zero-shot model and its fine-tuned version, "
        "θ(α) = (1−α)·θ_zs + α·θ_ft, evaluate every α on a suite, and write the table and the WiSE-FT figure "
        "(in-distribution accuracy against mean accuracy under shift) with the best α marked; optionally "
        "write the model at one α as an ordinary export.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("zero_shot", metavar="ZERO_SHOT", help="the zero-shot end point (α = 0)")
    p.add_argument("finetuned", metavar="FINETUNED", help="the fine-tuned end point (α = 1)")
    p.add_argument("--suite", help="a suite YAML file, or the name of a shipped suite")
    p.add_argument("--alphas", default="0:1:0.1", help="START:STOP:STEP, stop included, or a list (default 0:1:0.1)")
    p.add_argument("--out", help="the result folder (with --suite)")
    p.add_argument(
        "--id",
        dest="id_task",
        metavar="TASK",
        help="the in-distribution result (default: the suite's role id, else its first result)",
    )
    p.add_argument(
        "--shift",
        nargs="+",
        metavar="TASK",
        help="the results under shift (default: the suite's role shift, else all the others)",
    )
    p.add_argument(
        "--id-tolerance",
        type=float,
        default=0.01,
        help="best α: the highest mean shift among αs whose ID metric is within this of the best ID (default "
        "0.01, one point of an accuracy)",
    )
    p.add_argument("--export-alpha", metavar="A", help="also write the model at this α (a number, or best)")
    p.add_argument("--export-out", metavar="DIR2", help="where the export goes (default DIR/export_alpha_<A>)")
    add_encoding_options(p, "the suite's")
    add_quiet_option(p)
    add_set_option(p, "tasks.0.n=100 (a field of the suite file)")
    p.set_defaults(func=run)


def _export_alpha(text: str | None) -> float | str | None:
    from vislang.errors import ConfigError

    if text is None or text == "best":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--export-alpha {text!r}: expected a number in [0, 1] or best")
    return value


def _check_args(args: argparse.Namespace) -> tuple[list[float], float | str | None]:
    from vislang.errors import ConfigError
    from vislang.wise import parse_alphas

    alphas, export = parse_alphas(args.alphas), _export_alpha(args.export_alpha)
    if not args.id_tolerance >= 0:
        raise ConfigError(f"--id-tolerance {args.id_tolerance}: expected a number >= 0")
    if args.suite is None:
        if not isinstance(export, float) or not args.export_out:
            raise ConfigError("give --suite SUITE --out DIR to evaluate, or --export-alpha A --export-out DIR2 only")
    elif not args.out:
        raise ConfigError("--suite needs --out DIR (the table, the figure and each α's results go there)")
    if args.export_out and export is None:
        raise ConfigError("--export-out needs --export-alpha A (a number in [0, 1] or best)")
    return alphas, export


def run(args: argparse.Namespace) -> int:
    from vislang.eval.suite import read_suite
    from vislang.wise import export_alpha, load_pair

    alphas, export = _check_args(args)
    suite = read_suite(args.suite, args.set) if args.suite else None
    pair = load_pair(args.zero_shot, args.finetuned, args.device)
    for note in pair.notes:
        print(f"vislang: note: {note}", file=sys.stderr)
    if suite is not None:
        best = _sweep(args, suite, pair, alphas)
        export = best if export == "best" else export
    if export is not None:
        out = Path(args.export_out) if args.export_out else Path(args.out) / f"export_alpha_{_name(export)}"
        source = f"WiSE-FT alpha={export}: (1-alpha)*{args.zero_shot} + alpha*{args.finetuned}"
        export_alpha(pair, float(export), out, source)
        print(f"exported θ(α={_name(export)}) to {out}; open with vislang.load('{out}')")
    return 0


def _name(alpha: float | str) -> str:
    from vislang.wise import alpha_name

    return alpha_name(float(alpha))


def _sweep(args: argparse.Namespace, suite, pair, alphas: list[float]) -> float:
    from vislang.eval.suite_report import write_results
    from vislang.eval.tasks import result_roles
    from vislang.experiment import eval_context
    from vislang.wise import alpha_name, choose_tasks, role_defaults, sweep, wise_table, write_table

    workers = suite.workers if args.workers is None else args.workers
    batch = args.batch_size or suite.batch_size
    context = eval_context(pair.cfg, pair.tokenizer, batch, workers, not args.quiet, args.precision)
    results = result_roles(suite.tasks, context)
    id_task, shifts = choose_tasks([r.name for r in results], *role_defaults(results, args.id_task, args.shift))
    out = Path(args.out)

    def each(alpha: float, results) -> None:
        model = f"WiSE-FT α={alpha_name(alpha)}: (1−α)·{args.zero_shot} + α·{args.finetuned}"
        write_results(results, out / f"alpha_{alpha_name(alpha)}", model, str(args.suite))
        by_name = {r.name: r for r in results}
        shown = [f"{name} {by_name[name].metrics.get(by_name[name].main_metric() or '', float('nan')):.4f}"
                 for name in (id_task, *shifts)]  # fmt: skip
        print(f"α={alpha_name(alpha):6s} " + "  ".join(shown))

    points = sweep(pair, suite.tasks, context, alphas, each)
    table = wise_table(points, id_task, shifts, args.id_tolerance)
    write_table(table, out, str(args.zero_shot), str(args.finetuned), str(args.suite))
    best = table.rows[table.best]
    print(f"best α = {alpha_name(best['alpha'])} (ID {best['id']:.4f}, mean shift {best['shift_mean']:.4f})")
    print(f"wrote {out / 'wise.md'}, wise.csv, wise.png and alpha_<α>/ (each α's suite results)")
    return best["alpha"]
