"""The stage kit: settings declared once, the ledger's resume rule, write-behind, report."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest

from lanepaint.kit import (
    SUMMARY_KEYS,
    Ledger,
    StageReport,
    StageResult,
    WriteBehind,
    add_arguments,
    component_doc,
    from_args,
    setting,
    settings_key,
    to_argv,
)


@dataclass(frozen=True)
class DemoConfig:
    steps: int = setting(50, help="denoising steps")
    max_frames: int = setting(0, help="frames per video (0 = all)")
    scale: float = setting(1.5, help="guidance scale")
    mode: str = setting("fit", help="view geometry", choices=("fit", "stretch"))
    names: tuple[str, ...] = setting(("a", "b"), help="names", parse=lambda s: tuple(s.split(",")))
    judge: bool = setting(True, help="judge the first frame")
    compile: bool = setting(False, help="compile blocks", output=False)
    workers: int = setting(4, help="threads", output=False)


def parse(argv: list[str]) -> DemoConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, DemoConfig)
    return from_args(DemoConfig, parser.parse_args(argv))


def test_cli_defaults_come_from_the_config():
    assert parse([]) == DemoConfig()


def test_cli_flags_set_every_kind_of_field():
    cfg = parse(
        ["--steps", "7", "--scale", "2", "--mode", "stretch", "--names", "x,y,z", "--no-judge"]
        + ["--compile", "--max-frames", "9"]
    )
    assert cfg == DemoConfig(
        steps=7, scale=2.0, mode="stretch", names=("x", "y", "z"), judge=False, compile=True,
        max_frames=9,
    )


def test_cli_rejects_a_choice_outside_the_declared_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["--mode", "crop"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_to_argv_rebuilds_the_same_config():
    cfg = DemoConfig(steps=3, scale=0.25, names=("q",), judge=False, compile=True)
    assert parse(to_argv(cfg)) == cfg


def test_help_text_carries_the_default():
    parser = argparse.ArgumentParser()
    add_arguments(parser, DemoConfig)
    text = parser.format_help()
    assert "denoising steps (default 50)" in text
    assert "frames per video (0 = all) (default 0)" in text


def test_settings_key_ignores_speed_switches_only():
    base = settings_key(DemoConfig())
    assert settings_key(DemoConfig(compile=True, workers=1)) == base
    assert settings_key(DemoConfig(steps=49)) != base
    assert settings_key(DemoConfig(), models={"model_set": "smoke"}) != base


def test_component_doc_documents_only_the_component_parameters():
    @component_doc(DemoConfig, "Edit one shard.", extra={"layout": "the input layout"})
    def comp(layout: str, steps: int = 50, compile: bool = False):
        pass

    assert comp.__doc__.splitlines()[0] == "Edit one shard."
    assert "    layout: the input layout" in comp.__doc__
    assert "    steps: denoising steps" in comp.__doc__
    assert "    compile: compile blocks" in comp.__doc__
    assert "scale" not in comp.__doc__


def test_ledger_resume_rule(tmp_path):
    ledger = Ledger(str(tmp_path), "k1")
    assert not ledger.is_done("a")
    ledger.commit("a", {"frames": 3})
    ledger.commit("b", {"status": "failed"})
    fresh = Ledger(str(tmp_path), "k1")
    assert fresh.is_done("a") and not fresh.is_done("b")
    assert not fresh.is_done("a", check=lambda rec: rec["frames"] == 4)
    assert not Ledger(str(tmp_path), "k2").is_done("a")  # other settings: redo
    todo, done = fresh.split(["a", "b", "c"], key=str)
    assert (todo, done) == (["b", "c"], ["a"])
    assert fresh.split(["a"], key=str, redo=True) == (["a"], [])
    fresh.withdraw("a")
    assert not (tmp_path / "records" / "a.json").exists()
    assert not Ledger(str(tmp_path), "k1").is_done("a")


def test_ledger_refuses_unsafe_item_ids(tmp_path):
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            Ledger(str(tmp_path), "k").uri(bad)


def test_ledger_ignores_an_unreadable_record(tmp_path):
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "x.json").write_text("{not json")
    assert not Ledger(str(tmp_path), "k").is_done("x")


def test_write_behind_reports_each_item_once_in_order():
    done, failed = [], []

    def work(n):
        if n == 2:
            raise OSError("disk full")
        return n * 10

    on_done = lambda i, r: done.append((i, r))  # noqa: E731
    on_error = lambda i, e: failed.append((i, str(e)))  # noqa: E731
    with WriteBehind(on_done, on_error) as w:
        for n in range(4):
            w.submit(n, work, n)
    assert done == [(0, 0), (1, 10), (3, 30)]
    assert failed == [(2, "disk full")]


def test_report_has_the_same_keys_in_every_stage(tmp_path):
    report = StageReport("demo", str(tmp_path))
    report.inputs, report.done = 3, 1
    report.fail("v1", "unreadable video: bad header")
    report.fail("v2", "unreadable video: eof")
    report.set_models({"model_set": "smoke", "model_set_label": "smoke (tiny)"})
    report.details["frames"] = 12
    summary = report.write()
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["failures_by_reason"] == {"unreadable video": 2}
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert (tmp_path / "summary.md").read_text().splitlines()[0] == "> model set: smoke (tiny)"
    assert len((tmp_path / "failures.jsonl").read_text().splitlines()) == 2
    result = StageResult(str(tmp_path), summary)
    assert not result.skipped and result.exit_code == 0
    assert StageResult("x", {**summary, "done": 0}).exit_code == 1


def test_keyed_path_gives_one_folder_per_settings():
    from lanepaint.kit import keyed_path

    key = settings_key(DemoConfig())
    assert keyed_path("gs://b/loras/{settings_key}", key) == f"gs://b/loras/{key}"
    assert keyed_path("/plain/folder", key) == "/plain/folder"
