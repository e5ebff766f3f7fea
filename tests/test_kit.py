"""The stage kit: settings declared once, the ledger's resume rule, write-behind, report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lanepaint.io.reports import Timings, render_markdown
from lanepaint.kit import (
    SUMMARY_KEYS,
    Ledger,
    OutputError,
    StageReport,
    StageResult,
    WriteBehind,
    add_arguments,
    check_apart,
    claim_output,
    component_doc,
    from_args,
    output_settings,
    setting,
    settings_key,
    to_argv,
)
from lanepaint.kit.cli import register_stage
from lanepaint.kit.guard import read_marker
from lanepaint.kit.lock import (
    LEASE_ENV,
    TOKEN_ENV,
    OutputBusyError,
    inherited_token,
    lock_uri,
    output_lock,
    parent_and_name,
    proc_start,
)
from lanepaint.kit.settings import default_of


@dataclass(frozen=True)
class DemoConfig:
    steps: int = setting(50, help="denoising steps")
    max_frames: int = setting(0, help="frames per video (0 = all)")
    scale: float = setting(1.5, help="guidance scale")
    mode: str = setting("fit", help="view geometry: fit or stretch", choices=("fit", "stretch"))
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
        steps=7,
        scale=2.0,
        mode="stretch",
        names=("x", "y", "z"),
        judge=False,
        compile=True,
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
    for bad in ("", ".", "..", "a/b"):
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


# --- found by mutation testing (docs/testing.md, "Mutation testing") -------------------
# Each test below kills mutants of lanepaint/kit or lanepaint/io that the tests above let
# survive; the mutation it guards against is named in its docstring or comments.


@dataclass(frozen=True)
class Inner:
    size: int = 3  # a plain field of a nested config counts as an output setting
    workers: int = setting(2, help="threads", output=False)


@dataclass(frozen=True)
class Outer:
    inner: Inner = setting(default_factory=Inner, help="nested config")
    sizes: tuple[int, ...] = setting((1, 2), help="sizes")
    table: dict = setting(default_factory=lambda: {1: (2, 3)}, help="table")


def io_config() -> type:
    """Declared when called, so setting() runs inside the test (a Config at module level is
    built at import, before any mutant is switched on)."""

    @dataclass(frozen=True)
    class Cfg:
        first: int = setting(1, help="first")
        steps: int = setting(5, help="steps", flag="--n-steps")
        size: tuple[int, int] = setting(
            (4, 3),
            help="size",
            parse=lambda s: tuple(int(v) for v in s.split("x")),
            show=lambda v: f"{v[0]}x{v[1]}",
        )
        scale: float | None = setting(None, help="scale")
        seed: int = setting(0, help="seed", cli=False)
        device: str = setting("cpu", help="device", output=False, choices=["cpu", "cuda"])
        tags: tuple[str, ...] = setting(
            default_factory=lambda: ("a",), help="tags", parse=lambda s: tuple(s.split(","))
        )

    return Cfg


def test_setting_keeps_default_and_meaning_on_the_field():
    cfg_cls = io_config()
    fields = {f.name: f for f in dataclasses.fields(cfg_cls)}
    assert dict(fields["first"].metadata) == {
        "help": "first",
        "output": True,
        "choices": None,
        "flag": None,
        "parse": None,
        "show": None,
        "cli": True,
    }
    assert fields["steps"].metadata["flag"] == "--n-steps"
    assert fields["size"].metadata["show"]((8, 6)) == "8x6"
    assert fields["size"].metadata["parse"]("8x6") == (8, 6)
    assert fields["seed"].metadata["cli"] is False
    assert fields["device"].metadata["output"] is False
    assert fields["device"].metadata["choices"] == ("cpu", "cuda")
    assert cfg_cls() == cfg_cls(1, 5, (4, 3), None, 0, "cpu", ("a",))
    assert default_of(cfg_cls, "tags") == ("a",) and default_of(cfg_cls, "size") == (4, 3)


def test_cli_flags_follow_flag_show_parse_exclude_and_cli_false(capsys):
    cfg_cls = io_config()
    parser = argparse.ArgumentParser()
    add_arguments(parser, cfg_cls, exclude=("first",))
    assert "size (default 4x3)" in parser.format_help()
    args = parser.parse_args(["--n-steps", "7", "--size", "8x6", "--scale", "2.5"])
    cfg = from_args(cfg_cls, args)
    assert cfg == cfg_cls(steps=7, size=(8, 6), scale=2.5)
    assert isinstance(cfg.scale, float)  # `float | None` parses as float
    for flag in ("--first", "--seed", "--steps"):  # excluded, cli=False, renamed
        with pytest.raises(SystemExit):
            parser.parse_args([flag, "1"])
    capsys.readouterr()
    argv = to_argv(cfg, exclude=("first",))
    assert argv == "--n-steps 7 --size 8x6 --scale 2.5 --device cpu --tags a".split()
    assert from_args(cfg_cls, parser.parse_args(argv)) == cfg


def test_to_argv_joins_tuples_with_commas():
    cfg = DemoConfig(names=("q", "r"))
    assert to_argv(cfg)[to_argv(cfg).index("--names") + 1] == "q,r"
    assert parse(to_argv(cfg)) == cfg


def test_output_settings_are_json_ready_and_nested():
    want = {"inner": {"size": 3}, "sizes": [1, 2], "table": {"1": [2, 3]}}
    assert output_settings(Outer()) == want


def test_settings_key_is_16_hex_over_the_settings_and_the_identity():
    key = settings_key(DemoConfig(), models={"set": "a"}, root=Path("/m"))
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert settings_key(DemoConfig(), root=Path("/m"), models={"set": "a"}) == key  # any order
    assert settings_key(DemoConfig(), models={"set": "b"}, root=Path("/m")) != key


def test_component_doc_renames_parameters_and_marks_the_config():
    @component_doc(DemoConfig, "Edit one shard.", rename={"n_steps": "steps"})
    def comp(n_steps: int = 50, mode: str = "fit"):
        pass

    assert comp.__doc__ == (
        "Edit one shard.\n\nArgs:\n    n_steps: denoising steps\n"
        "    mode: view geometry: fit or stretch\n"
    )
    assert comp.lanepaint_config == (DemoConfig, {"n_steps": "steps"})


def test_register_stage_help_line_flags_and_exit_codes(caplog):
    doc = "Stage demo: do the demo thing: fast.\n\nMore about it."

    def add_io(p):
        p.add_argument("--code", type=int, default=0)

    def run(args):
        if args.code < 0:
            raise ValueError("bad input")
        return args.code or None

    parser = argparse.ArgumentParser(prog="lp")
    sub = parser.add_subparsers()
    stage = register_stage(sub, "demo", doc, DemoConfig, add_io, run, exclude=("workers",))
    assert [a.help for a in sub._choices_actions] == ["do the demo thing: fast"]
    assert stage.description == doc
    assert stage.formatter_class is argparse.RawDescriptionHelpFormatter
    assert "--workers" not in stage.format_help() and "--steps" in stage.format_help()

    def exit_code(*argv):
        args = parser.parse_args(["demo", *argv])
        return args.func(args)

    assert exit_code("--code", "3") == 3
    assert exit_code() == 0
    assert exit_code("--code", "-1") == 2 and "bad input" in caplog.text


def test_ledger_commits_under_root_and_keeps_its_cache_current(tmp_path):
    ledger = Ledger(str(tmp_path), "k1")
    record = ledger.commit("a", {"frames": 3})
    on_disk = json.loads((tmp_path / "records" / "a.json").read_text())
    assert on_disk == record
    assert (on_disk["status"], on_disk["settings_key"], on_disk["frames"]) == ("ok", "k1", 3)
    dt.datetime.fromisoformat(on_disk["finished_at"])
    assert ledger.is_done("a") and ledger.current() == {"a": record}  # same instance
    ledger.withdraw("a")
    assert not ledger.is_done("a")
    ledger.withdraw("never-done")  # nothing to withdraw: fine


def test_ledger_split_applies_the_stage_check_and_skips_stray_files(tmp_path):
    ledger = Ledger(str(tmp_path), "k")
    ledger.commit("a", {"frames": 3})
    ledger.commit("b", {"frames": 4})
    (tmp_path / "records" / "0-notes.txt").write_text("not a record")  # sorts first
    fresh = Ledger(str(tmp_path), "k")
    assert fresh.split(["a", "b"], key=str, check=lambda rec: rec["frames"] == 4) == (["a"], ["b"])


def test_write_behind_overlaps_one_write_with_the_next_item():
    gate, done = threading.Event(), []

    def slow(n, *, scale):
        gate.wait(timeout=2)
        return n * scale

    w = WriteBehind(lambda i, r: done.append((i, r)), lambda i, e: None)
    w.submit(0, slow, 0, scale=10)
    assert done == []  # returned while the write runs (depth 1)
    gate.set()
    w.submit(1, slow, 1, scale=10)
    assert done == [(0, 0)]  # the second submit waited for the first write only
    w.drain()
    assert done == [(0, 0), (1, 10)]


def test_write_behind_writes_one_at_a_time():
    active, peak, lock = [0], [0], threading.Lock()

    def write(n):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return n

    done = []
    with WriteBehind(lambda i, r: done.append(i), lambda i, e: None, depth=3) as w:
        for n in range(4):
            w.submit(n, write, n)
    assert done == [0, 1, 2, 3] and peak[0] == 1


def test_report_starts_empty_and_counts_as_documented(tmp_path):
    report = StageReport("demo", str(tmp_path))
    s = report.summary()
    assert (s["inputs"], s["done"], s["skipped_done"], s["failed"]) == (0, 0, 0, 0)
    assert s["settings"] == {} and s["details"] == {} and s["failures_by_reason"] == {}
    assert (s["settings_key"], s["model_set"], s["model_set_label"]) == (None, None, None)
    for stamp in (s["started_at"], s["finished_at"]):  # UTC, whole seconds
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", stamp)
    report.timings.add("decode", 0.123456)
    timings = report.summary()["timings_s"]
    assert timings["decode"] == 0.1235 and 0 <= timings["total"] < 3
    assert not StageResult("x", s).skipped and StageResult("x", s).exit_code == 0


def test_report_files_failures_markdown_and_stem(tmp_path):
    report = StageReport("demo", str(tmp_path))
    report.done = 1
    report.fail("v1", "unreadable video: bad: header", frame=3)
    report.fail("v2", "unreadable video: eof")
    report.set_models({"model_set": "smoke", "model_set_label": "smoke (tiny)"})
    report.settings = {"steps": 5}
    report.details["frames"] = 12
    report.notes.append("a note")
    summary = report.write(stem="captions")
    assert summary["model_set"] == "smoke"
    assert summary["failures_by_reason"] == {"unreadable video": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "captions.failures.jsonl",
        "captions.summary.json",
        "captions.summary.md",
    ]
    lines = (tmp_path / "captions.failures.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"item": "v1", "reason": "unreadable video: bad: header", "frame": 3},
        {"item": "v2", "reason": "unreadable video: eof"},
    ]
    md = (tmp_path / "captions.summary.md").read_text().splitlines()
    assert md[:5] == ["> model set: smoke (tiny)", "", f"# demo: {tmp_path}", "", "> a note"]
    assert "| done | 1 |" in md and "| frames | 12 |" in md
    assert "## settings" not in md and "## details" not in md
    result = StageResult(str(tmp_path), summary)
    assert result.line() == (
        f"demo: {tmp_path}: done 1, skipped 0 already done, failed 2 [smoke (tiny)]"
    )
    bare = StageReport("bare", str(tmp_path / "bare"))
    assert bare.markdown(bare.summary()).splitlines()[0] == "> model set: no models used"
    assert StageResult("o", bare.summary()).line().endswith("[no models]")


def test_report_keeps_earlier_failures_that_still_fail(tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text(
        '{"item": "v1", "reason": "bad"}\nnot json\n[1]\n{"item": "v2", "reason": "bad"}\n'
        '{"item": "v3", "reason": "fixed"}\n{"item": "v4", "reason": "bad"}\n'
        '{"item": "v1", "reason": "bad"}\n'
    )
    report = StageReport("demo", str(tmp_path / "out"))
    report.fail("v2", "bad again")
    assert report.keep_earlier_failures(str(tmp_path / "missing.jsonl"), lambda i: True) == 0
    assert report.keep_earlier_failures(str(old), still_failed=lambda i: i != "v3") == 2
    assert report.write()["failed"] == 1  # earlier failures are not this run's
    lines = (tmp_path / "out" / "failures.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"item": "v2", "reason": "bad again"},
        {"item": "v1", "reason": "bad", "earlier": True},
        {"item": "v4", "reason": "bad", "earlier": True},
    ]


def test_render_markdown_page():
    summary = {"done": 2, "by": {"a": 1}, "deep": {"x": {"y": 1}}, "empty": {}, "items": [1]}
    assert render_markdown("t", summary, ["n1"]) == (
        "# t\n\n> n1\n\n| field | value |\n| --- | --- |\n| done | 2 |\n\n"
        "## by\n\n| key | value |\n| --- | --- |\n| a | 1 |\n"
    )
    assert render_markdown("t", {}) == "# t\n"


def test_timings_accumulate_per_phase():
    timings = Timings()
    timings.add("a", 0.5)
    timings.add("a", 0.25)
    timings.add("b", 0.123456)
    assert timings.as_dict() == {"a": 0.75, "b": 0.1235}


def test_check_apart_bucket_root_and_mixed_backends(tmp_path):
    with pytest.raises(OutputError, match="contains the input"):
        check_apart(["gs://bkt/in"], ["gs://bkt"])
    with pytest.raises(OutputError, match="contains the input"):
        check_apart([str(tmp_path / "BOX" / "in")], [str(tmp_path / "BOX")])
    with pytest.raises(OutputError, match="inside the input"):  # a gs input listed first
        check_apart(["gs://bkt/x", str(tmp_path / "in")], [str(tmp_path / "in" / "out")])


def test_claim_output_of_a_file(tmp_path):
    out = tmp_path / "captions.jsonl"
    claim_output("caption", str(out), file=True)
    marker = json.loads((tmp_path / ".captions.jsonl.lanepaint.json").read_text())
    assert marker["stage"] == "caption"
    dt.datetime.fromisoformat(marker["created_at"])
    assert read_marker(str(out), file=True) == marker
    out.write_text("x")
    claim_output("caption", str(out), file=True)  # ours
    with pytest.raises(OutputError, match="made by lanepaint caption, not segment"):
        claim_output("segment", str(out), file=True)
    other = tmp_path / "people.jsonl"
    other.write_text("x")
    with pytest.raises(OutputError, match="not made by lanepaint caption"):
        claim_output("caption", str(other), file=True)
    summary = tmp_path / "people.summary.json"
    summary.write_text('{"stage": "caption"}')
    claim_output("caption", str(other), file=True, summary=str(summary), write=False)
    with pytest.raises(OutputError, match="is a folder"):
        claim_output("caption", str(tmp_path), file=True)


def test_claim_output_of_a_folder_ignores_our_own_leftovers(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_output("demo", str(empty))  # an existing empty folder is new
    leftovers = tmp_path / "leftovers"
    leftovers.mkdir()
    (leftovers / f".x.tmp-{'0' * 32}").write_text("half")
    (leftovers / ".sub.lanepaint.lock").write_text("{}")
    claim_output("demo", str(leftovers))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "summary.json").write_text("[1]")
    with pytest.raises(OutputError, match="not made by lanepaint demo"):
        claim_output("demo", str(odd))


@pytest.mark.parametrize("text", ["[1]", '{"stage": 3}', '{"other": "x"}'])
def test_a_marker_without_a_stage_name_is_no_marker(tmp_path, text):
    (tmp_path / ".lanepaint.json").write_text(text)
    assert read_marker(str(tmp_path)) is None


@pytest.mark.gcs
def test_claim_output_on_gcs(gcs_bucket):
    from lanepaint.io import storage

    storage.write_text(f"gs://{gcs_bucket}/theirs/x.txt", "x")
    with pytest.raises(OutputError, match="not made by lanepaint demo"):
        claim_output("demo", f"gs://{gcs_bucket}/theirs")
    claim_output("demo", f"gs://{gcs_bucket}/new")
    assert read_marker(f"gs://{gcs_bucket}/new")["stage"] == "demo"


# --- the output lock -------------------------------------------------------------------


def write_lock(output: str, age: float = 0.0, **info) -> Path:
    path = Path(lock_uri(output))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info) if info else "")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def wait_for(condition, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_lock_sits_beside_its_output():
    assert parent_and_name("gs://bkt/a/out/") == ("gs://bkt/a", "out")
    assert parent_and_name("gs://bkt/out") == ("gs://bkt", "out")
    assert parent_and_name("out/") == (".", "out")
    assert parent_and_name("/data/out") == ("/data", "out")
    assert lock_uri("gs://bkt/a/out") == "gs://bkt/a/.out.lanepaint.lock"
    assert lock_uri("/data/out/") == "/data/.out.lanepaint.lock"
    assert parent_and_name("gs://bkt/aX/outX") == ("gs://bkt/aX", "outX")  # names kept whole
    assert parent_and_name("/data/outX") == ("/data", "outX")


def test_lock_of_an_output_in_a_new_folder(tmp_path):
    lock_file = tmp_path / "new" / "deeper" / ".out.lanepaint.lock"
    with output_lock("demo", str(tmp_path / "new" / "deeper" / "out")):
        assert json.loads(lock_file.read_text())["stage"] == "demo"
    assert not lock_file.exists()


def test_a_reused_pid_does_not_keep_a_lock(tmp_path):
    out = str(tmp_path / "out")
    me = {"stage": "other", "host": socket.gethostname(), "pid": os.getpid(), "token": "x"}
    write_lock(out, **me, proc_start=proc_start(os.getpid()) - 1)  # our pid, another start
    with output_lock("demo", out) as lock:
        assert lock.owned
    for start in (proc_start(os.getpid()), None):  # the same process; start time unknown
        write_lock(out, **me, proc_start=start)
        with pytest.raises(OutputBusyError, match="being written by other"):
            with output_lock("demo", out):
                pass


def test_torchrun_ranks_share_the_launchers_token(monkeypatch):
    host = socket.gethostname()
    for name in (TOKEN_ENV, "TORCHELASTIC_RUN_ID", "LOCAL_RANK", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert inherited_token() is None  # no run id: not a torchrun rank
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "r1")
    assert inherited_token() == f"torchrun:{host}:r1:"
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert inherited_token() == f"torchrun:{host}:r1:29500"
    monkeypatch.delenv("LOCAL_RANK")
    assert inherited_token() is None  # the launcher itself
    monkeypatch.setenv(TOKEN_ENV, "parent")
    assert inherited_token() == "parent"


@pytest.mark.parametrize("content", ["", "[1]"])
def test_an_empty_lock_is_waited_for_then_taken_over(tmp_path, monkeypatch, content):
    monkeypatch.setenv(LEASE_ENV, "3")  # polls every 0.05 s
    out = str(tmp_path / "out")
    write_lock(out, age=9.7).write_text(content)  # created, never filled: stale at 10 s
    then = time.time() - 9.7
    os.utime(lock_uri(out), (then, then))
    start = time.monotonic()
    with output_lock("demo", out) as lock:
        assert lock.owned
    assert time.monotonic() - start < 1.0


def test_a_lock_of_another_host_that_missed_two_beats_is_waited_for(tmp_path, monkeypatch):
    monkeypatch.setenv(LEASE_ENV, "0.6")  # a beat every 0.1 s
    out = str(tmp_path / "out")
    other = {"stage": "other", "host": "elsewhere", "pid": 1, "token": "x"}
    write_lock(out, age=0.25, **other)  # two beats missed, the lease (0.6 s) not over
    with output_lock("demo", out) as lock:
        assert lock.owned
    write_lock(out, **other)  # beating: busy at once
    with pytest.raises(OutputBusyError):
        with output_lock("demo", out):
            pass


def test_heartbeat_refreshes_the_lock_and_notices_a_takeover(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(LEASE_ENV, "0.6")  # a beat every 0.1 s
    with output_lock("demo", str(tmp_path / "out")) as lock:
        path = Path(lock.uri)
        then = time.time() - 100
        os.utime(path, (then, then))
        assert wait_for(lambda: time.time() - path.stat().st_mtime < 50)  # refreshed
        path.write_text(json.dumps({"token": "thief"}))
        assert wait_for(lambda: lock.lost)
    assert "lost the lock" in caplog.text
    assert json.loads(path.read_text()) == {"token": "thief"}  # left to its new holder


@pytest.mark.gcs
def test_heartbeat_on_gcs(gcs_bucket, monkeypatch):
    from lanepaint.io import storage

    monkeypatch.setenv(LEASE_ENV, "0.6")
    with output_lock("demo", f"gs://{gcs_bucket}/out") as lock:
        first = lock._generation
        assert wait_for(lambda: lock._generation != first)  # refreshed
        text = storage.read_versioned(lock.uri)[0]
        assert json.loads(text)["token"] == lock.token  # a beat keeps who holds it
        while storage.put_if_generation(lock.uri, '{"token": "thief"}', lock._generation) is None:
            pass  # raced with a beat: try again
        assert wait_for(lambda: lock.lost)
    assert storage.read_versioned(lock.uri)[0] == '{"token": "thief"}'


# --- KFP side of the settings ----------------------------------------------------------


def test_help_of_and_all_settings():
    from lanepaint.kit import all_settings
    from lanepaint.kit.settings import help_of

    assert help_of(DemoConfig, "steps") == "denoising steps"
    settings = all_settings(Outer())
    assert settings == {"inner": {"size": 3}, "sizes": [1, 2], "table": {"1": [2, 3]}}
    assert all_settings(DemoConfig())["workers"] == 4  # speed switches included


def test_from_params_parses_text_only_where_declared():
    from lanepaint.kit.settings import from_params

    params = {"layout": "ignored", "n_steps": 7, "names": "x,y", "mode": "stretch"}
    cfg = from_params(DemoConfig, params, rename={"n_steps": "steps"}, judge=False)
    assert cfg == DemoConfig(steps=7, names=("x", "y"), mode="stretch", judge=False)
    assert from_params(DemoConfig, {"names": ("p",)}).names == ("p",)  # not text: as is
    assert from_params(DemoConfig, {"steps": 3}) == DemoConfig(steps=3)


def test_component_defaults_drift_names_each_drifted_parameter():
    from lanepaint.kit.settings import component_defaults_drift

    @component_doc(DemoConfig, "Fine.", rename={"n_steps": "steps"})
    def fine(layout: str, n_steps: int = 50, names: str = "a,b", scale: float = 1.5):
        pass

    @component_doc(DemoConfig, "Drifted.", rename={"threads": "workers"})
    def drifted(layout="x", steps=49, names="a", scale=1, mode="fit", threads=3):
        pass

    assert component_defaults_drift(fine) == []
    assert component_defaults_drift(drifted) == [
        "drifted.steps defaults to 49, DemoConfig.steps to 50",
        "drifted.names defaults to 'a', DemoConfig.names to 'a,b'",
        "drifted.scale defaults to 1, DemoConfig.scale to 1.5",
        "drifted.threads defaults to 3, DemoConfig.workers to 4",
    ]


def test_a_lock_is_waited_for_up_to_wait_s(tmp_path, monkeypatch):
    monkeypatch.setenv(LEASE_ENV, "3")  # polls every 0.05 s
    out = str(tmp_path / "out")
    me = {"stage": "other", "host": socket.gethostname(), "pid": os.getpid(), "token": "x"}
    path = write_lock(out, **me, proc_start=proc_start(os.getpid()))  # a live holder
    threading.Timer(0.3, path.unlink).start()  # which finishes soon
    with output_lock("demo", out, wait_s=10) as lock:
        assert lock.owned


def test_our_own_token_on_the_lock(tmp_path, monkeypatch):
    """A retried create that had succeeded (our pid) is ours to release; a parent's lock
    (another pid) is used, never released by the child."""
    out = str(tmp_path / "out")
    monkeypatch.setenv(TOKEN_ENV, "inherited")
    ours = {"stage": "demo", "host": socket.gethostname(), "token": "inherited"}
    path = write_lock(out, **ours, pid=os.getpid())
    with output_lock("demo", out) as lock:
        assert lock.owned
    assert not path.exists()
    write_lock(out, **ours, pid=os.getppid())
    with output_lock("demo", out) as lock:
        assert not lock.owned
    assert path.exists()


def test_a_lock_removed_under_its_holder_is_released_quietly(tmp_path):
    with output_lock("demo", str(tmp_path / "out")) as lock:
        os.unlink(lock.uri)
    assert not os.path.exists(lock.uri)


# --- nan/inf in every stage Config, however it is built ---------------------------------


def _stage_configs() -> list[type]:
    """Every Config class in lanepaint/ (a class with a ``setting(...)`` or
    ``mirrored_setting(...)`` field), found by reading the source, so a new one is covered."""
    import ast
    import importlib

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted((root / "lanepaint").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            calls = [
                s.value.func.id
                for s in getattr(node, "body", [])
                if isinstance(s, ast.AnnAssign)
                and isinstance(s.value, ast.Call)
                and isinstance(s.value.func, ast.Name)
            ]
            if isinstance(node, ast.ClassDef) and {"setting", "mirrored_setting"} & set(calls):
                module = ".".join(path.relative_to(root).with_suffix("").parts)
                found.append(getattr(importlib.import_module(module), node.name))
    return found


def _float_fields() -> list[tuple[type, str, object]]:
    """(Config, field, a value of the field's type holding nan) for every float setting."""
    import typing

    out = []
    for cls in _stage_configs():
        for f in dataclasses.fields(cls):
            hint = str(typing.get_type_hints(cls)[f.name])
            if hint in ("<class 'float'>", "float | None"):
                out.append((cls, f.name, float("nan")))
            elif "float" in hint:  # tuples of floats (points): one nan inside
                value = getattr(cls(), f.name) or ((0.5, 0.5),)
                out.append((cls, f.name, ((float("nan"), *value[0][1:]), *value[1:])))
    return out


def test_every_stage_config_is_found():
    names = {c.__name__ for c in _stage_configs()}
    assert names >= {
        "SegmentConfig",
        "CaptionConfig",
        "BuildConfig",
        "FilterConfig",
        "TrainConfig",
        "EditConfig",
        "EvaluateConfig",
        "FirstFrameConfig",
    }


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    "cls,name,value", _float_fields(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_a_config_built_in_code_refuses_nan_and_inf_naming_the_field(cls, name, value, bad):
    """Not only the CLI and KFP paths: ``SomeConfig(x=float('nan'))`` raises, naming x."""
    cls()  # the defaults are valid, so the error below is about this field
    if isinstance(value, tuple):
        value = ((float(bad), *value[0][1:]), *value[1:])
    else:
        value = float(bad)
    with pytest.raises(ValueError, match=rf"must be a finite number.*\({cls.__name__}\.{name}\)"):
        cls(**{name: value})


def test_the_cli_and_kfp_paths_get_the_same_finite_check():
    """from_args and from_params no longer check by themselves: the Config does, once."""
    from lanepaint.kit.settings import from_params
    from lanepaint.stages.segment import SegmentConfig

    with pytest.raises(ValueError, match=r"--fps must be a finite number, got nan \(Segment"):
        from_params(SegmentConfig, {"fps": float("nan")})  # a KFP float parameter
    parser = argparse.ArgumentParser()
    add_arguments(parser, SegmentConfig)
    with pytest.raises(ValueError, match=r"--min-component must be a finite number, got inf"):
        from_args(SegmentConfig, parser.parse_args(["--min-component", "inf"]))
