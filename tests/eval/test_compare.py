"""eval.compare: sample-by-sample changes between two runs and McNemar's test."""

import json

import pytest

from qwen_vl.eval.compare import compare, main, mcnemar


def write_run(folder, scores: dict[str, object], metric="exact_match"):
    folder.mkdir()
    lines = [json.dumps({"id": key, "prediction": "x", "scores": {metric: value}}) for key, value in scores.items()]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_counts_the_answers_made_right_and_wrong(tmp_path):
    before = write_run(tmp_path / "a", {"1": 0.0, "2": 0.0, "3": 0.0, "4": 1.0, "5": 1.0, "6": None, "7": 1.0})
    after = write_run(tmp_path / "b", {"1": 1.0, "2": 1.0, "3": 1.0, "4": 0.0, "5": 1.0, "6": 1.0, "8": 0.0})
    # ids 1-5 are shared and scored (6 has no score in the first run, 7 and 8 are in one run only)
    assert compare(before, after / "predictions.jsonl") == (
        "exact_match on 5 shared samples: 40.0% -> 80.0%; 3 made right, 1 made wrong; "
        "McNemar's chi-squared 0.2 (p 0.617)"
    )


def test_mcnemar_is_the_continuity_corrected_statistic():
    chi2, p = mcnemar(38, 13)
    assert chi2 == pytest.approx((25 - 1) ** 2 / 51) and p == pytest.approx(0.000778, rel=1e-3)
    assert mcnemar(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("second", "metric", "reason"),
    [
        ("missing", None, "no predictions"),
        ("other_ids", None, "share no sample ids"),
        ("b", "wer", "is not a per-sample score in [0, 1]"),
        ("b", "cer", "no sample has a 'cer' score"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, second, metric, reason):
    for run in ("a", "b"):  # a caption run: exact match per sample, WER as (errors, words)
        (tmp_path / run).mkdir()
        (tmp_path / run / "predictions.jsonl").write_text(
            json.dumps({"id": "1", "scores": {"exact_match": 1.0, "wer": [0, 6]}}) + "\n"
        )
    write_run(tmp_path / "other_ids", {"9": 1.0})
    argv = [str(tmp_path / "a"), str(tmp_path / second)] + (["--metric", metric] if metric else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and reason in err
