"""Compiled pipelines: deterministic, committed, valid protos; and they run under kfp.local."""

import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from lp_testdata import make_dataset

from lanepaint.data import fluxfill
from pipelines import compile as pc
from pipelines.local import run_local


def test_compiled_yaml_is_current():
    assert pc.main(["--check"]) == 0, "pipelines/compiled is stale: run `make compile`"


@pytest.mark.parametrize("name", sorted(pc.PIPELINES))
def test_compiled_yaml_parses_strictly(name):
    docs = list(yaml.safe_load_all((pc.COMPILED / f"{name}.yaml").read_text()))
    json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    if len(docs) > 1:
        json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    images = {ex["container"]["image"] for ex in docs[0]["deploymentSpec"]["executors"].values()}
    assert all(":" in i and not i.endswith(":latest") for i in images), images


def test_compiling_twice_is_identical(tmp_path):
    a = pc.compile_to("filter-dataset", tmp_path / "a.yaml").read_bytes()
    b = pc.compile_to("filter-dataset", tmp_path / "b.yaml").read_bytes()
    assert a == b


@pytest.mark.slow
def test_filter_pipeline_runs_locally(tmp_path):
    raw = make_dataset(str(tmp_path / "raw"), n=10)
    run_local(
        "filter-dataset",
        {"input_dir": raw, "color": "white", "require_clear_road": True},
        tmp_path / "root",
    )
    out = raw + "__any_white_any_clear"
    rows, _ = fluxfill.read_dataset(out)
    assert len(rows) == 4
    pointers = list((tmp_path / "root").rglob("dataset"))
    assert pointers and json.loads(pointers[0].read_text())["uri"] == out
    reports = list(Path(tmp_path / "root").rglob("report"))
    assert reports and "filter-dataset" in reports[0].read_text()
