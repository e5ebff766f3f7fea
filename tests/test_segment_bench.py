"""``python -m bench.segment --size smoke``: the benchmark script runs and records its result."""

from __future__ import annotations

import json

import torch

from bench import segment as bench_segment

torch.set_num_threads(2)


def test_smoke_bench_writes_the_perf_record(tmp_path, capsys):
    assert bench_segment.main(["--size", "smoke", "--out-dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "segment.smoke.json").read_text())
    keys = {"stage", "card", "commit", "date", "ours_s", "reference_s", "ratio", "peak_gib"}
    assert keys | {"floor_s", "rel_err"} <= set(record)
    assert record["stage"] == "segment" and record["card"] == "cpu"
    assert record["floor_s"] is None and record["ours_s"] > 0 and record["reference_s"] > 0
    # The masks are not trivially empty, and the two paths agree (inputs differ only by the
    # reference's JPEG round trip).
    extra = record["extra"]
    assert extra["frames"] == 2 and 0 < extra["mask_fraction_reference"] < 1
    assert 0 <= record["rel_err"] < 0.1
    assert extra["rel_err_same_input"] == 0  # fp32 on the CPU: our path is the stock one
    assert extra["rel_err_vs_eager"] is None and extra["ours_eager_s"] is None  # no --vos
    table = capsys.readouterr().out.strip().splitlines()
    assert table[-2].split()[:2] == ["stage", "work"] and table[-1].split()[0] == "segment"


def test_smoke_bench_vos_compares_masks_with_the_plain_predictor(tmp_path):
    """``--vos`` also runs the plain predictor through the same path and records the masks'
    1 - IoU (at smoke size both are the tiny plain predictor: identical masks)."""
    assert bench_segment.main(["--size", "smoke", "--vos", "--out-dir", str(tmp_path)]) == 0
    extra = json.loads((tmp_path / "segment.smoke.json").read_text())["extra"]
    assert extra["vos_optimized"] is True and extra["ours_eager_s"] > 0
    assert extra["rel_err_vs_eager"] == 0.0
