"""Two runs of one benchmark, sample by sample: which answers the second run made right or wrong,
and McNemar's test of whether the difference is more than noise.

    python -m qwen_vl.eval.compare runs/old/caption runs/new/caption [--metric exact_match]

A run is an output folder of `python -m qwen_vl.eval` (or its predictions.jsonl). A sample counts as right
when its metric value is 1; samples the metric does not apply to, and ids only one run holds, are
left out. Prints one line; bad input is one `error:` line and exit code 2.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from qwen_vl.errors import OneLineParser
from qwen_vl.eval.predictions import PREDICTIONS, read_records


def right_by_id(run: Path, metric: str | None) -> tuple[str, dict[str, bool]]:
    """(metric, {id: right}) of one run; the metric defaults to the run's first per-sample one."""
    path = run / PREDICTIONS if run.is_dir() else run
    records = read_records(path)
    if not records:
        raise ValueError(f"{path}: no predictions")
    metric = metric or next(iter(records[0].get("scores") or {}), None)
    outcome = {}
    for record in records:
        value = (record.get("scores") or {}).get(metric)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{path}: {metric} is not a per-sample score in [0, 1] (got {value!r})")
        outcome[str(record["id"])] = value == 1
    if not outcome:
        raise ValueError(f"{path}: no sample has a {metric!r} score")
    return metric, outcome


def mcnemar(made_right: int, made_wrong: int) -> tuple[float, float]:
    """Continuity-corrected chi-squared (1 degree of freedom) of the discordant pairs, and its p."""
    if made_right + made_wrong == 0:
        return 0.0, 1.0
    chi2 = (abs(made_right - made_wrong) - 1) ** 2 / (made_right + made_wrong)
    return chi2, math.erfc(math.sqrt(chi2 / 2))


def compare(first: Path, second: Path, metric: str | None = None) -> str:
    metric, before = right_by_id(first, metric)
    _, after = right_by_id(second, metric)
    shared = before.keys() & after.keys()
    if not shared:
        raise ValueError(f"{first} and {second} share no sample ids")
    made_right = sum(after[i] and not before[i] for i in shared)
    made_wrong = sum(before[i] and not after[i] for i in shared)
    chi2, p = mcnemar(made_right, made_wrong)

    def share(outcome: dict[str, bool]) -> float:
        return 100 * sum(outcome[i] for i in shared) / len(shared)

    return (
        f"{metric} on {len(shared)} shared samples: {share(before):.1f}% -> {share(after):.1f}%; "
        f"{made_right} made right, {made_wrong} made wrong; McNemar's chi-squared {chi2:.1f} (p {p:.3g})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m qwen_vl.eval.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="the earlier run: an eval output folder or its predictions.jsonl")
    parser.add_argument("second", type=Path, help="the run compared with it")
    parser.add_argument("--metric", default=None, help="a per-sample 0/1 metric (default: the run's first)")
    args = parser.parse_args(argv)
    try:
        print(compare(args.first, args.second, args.metric))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
