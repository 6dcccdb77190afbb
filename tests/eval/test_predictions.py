"""Predictions files: torn last lines, part files of several processes, the merge."""

import json

from qwen_vl.eval.predictions import PREDICTIONS, PredictionLog, all_records, merge, part_path, read_records


def write(path, records, tail=b""):
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def test_torn_last_line_is_ignored_and_cut_before_appending(tmp_path):
    path = tmp_path / PREDICTIONS
    write(path, [{"id": "a", "prediction": "x"}], tail=b'{"id": "b", "predic')
    assert [r["id"] for r in read_records(path)] == ["a"]
    with PredictionLog(path) as log:
        log.append([{"id": "b", "prediction": "y"}, {"id": "c", "prediction": "z"}])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "c"]  # the torn bytes are gone


def test_merge_orders_dedupes_and_removes_parts(tmp_path):
    write(tmp_path / PREDICTIONS, [{"id": "s2", "prediction": "from merged"}])
    write(part_path(tmp_path, 0), [{"id": "s0", "prediction": "p0"}, {"id": "s2", "prediction": "dup"}])
    write(part_path(tmp_path, 1), [{"id": "s1", "prediction": "p1"}, {"id": "extra", "prediction": "e"}], tail=b"{")
    assert {r["id"] for r in all_records(tmp_path)} == {"s0", "s1", "s2", "extra"}
    records = merge(tmp_path, ["s0", "s1", "s2"])
    assert [(r["id"], r["prediction"]) for r in records] == [
        ("s0", "p0"),
        ("s1", "p1"),
        ("s2", "from merged"),  # the first record of an id wins
        ("extra", "e"),  # ids outside this run's selection are kept, last
    ]
    assert read_records(tmp_path / PREDICTIONS) == records
    assert not list(tmp_path.glob("predictions.part-*"))
