"""`python -m evals --gt GT --pred OUTPUT_DIR`: score a run's predictions, print a table, write metrics.json.

GT is a COCO instances or captions JSON, or a JSON list of VQA / referring-expression / OCR records (see
evals/ground_truth.py); OUTPUT_DIR is the pipeline's folder of Parquet part files, or a COCO results JSON. The
metrics follow the rows' task column. metrics.json and the precision-recall PNGs are written next to the
predictions unless --out says otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from evals.coco import ENGINES
from evals.report import evaluate_predictions, output_folder
from jobs.cli import Parser, fail


def main(argv: list[str] | None = None) -> int:
    """`python -m evals`: score predictions against ground truth; the exit status (see the module docstring)."""
    parser = Parser(prog="python -m evals", description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, type=Path, help="ground-truth JSON")
    parser.add_argument("--pred", required=True, type=Path, help="folder of Parquet part files, or COCO results JSON")
    parser.add_argument("--out", type=Path, default=None, help="where metrics.json and plots go (default: --pred)")
    parser.add_argument("--engine", choices=ENGINES, default="auto", help="COCO engine (default: auto)")
    parser.add_argument("--no-plots", action="store_true", help="skip the precision-recall PNGs")
    args = parser.parse_args(argv)
    if not args.gt.is_file():
        return fail(f"--gt {args.gt}: no such file")
    if not args.pred.exists():
        return fail(f"--pred {args.pred}: does not exist")
    out = args.out or output_folder(args.pred)
    out.mkdir(parents=True, exist_ok=True)
    try:
        report = evaluate_predictions(args.gt, args.pred, engine=args.engine, plot_dir=None if args.no_plots else out)
    except (ValueError, FileNotFoundError) as e:
        return fail(str(e))
    print("\n".join(report.table))
    path = report.write(out)
    print(f"\nwrote {path}" + "".join(f"\nwrote {p}" for p in report.plots))
    if report.problem:
        print(f"error: {report.problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
