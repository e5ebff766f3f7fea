"""docs/reference: the generated pages are current, complete and deterministic."""

from __future__ import annotations

import importlib

import pytest
import yaml

from lanepaint import cli
from pipelines import reference as ref
from pipelines.submit import UsageError, check_params


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return ref.pages()


def test_reference_pages_are_current(pages):
    stale = ref.stale_pages(pages)
    assert stale == [], f"docs/reference is stale ({', '.join(stale)}): run `make reference`"


def test_every_stage_has_a_page():
    """Every subcommand registered from lanepaint.stages is documented (and nothing else)."""
    stage_modules = [m for m in cli.COMMANDS if m.startswith("lanepaint.stages.")]
    names = {importlib.import_module(m).STAGE for m in stage_modules}
    assert names == set(ref.STAGES) == set(ref.COMPONENTS)


def test_pages_show_every_argument_the_cli_accepts(pages):
    parsers = ref.stage_parsers()
    for stage in ref.STAGES:
        page = pages[f"{stage}.md"]
        for action in parsers[stage]._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in page, f"{stage}.md lacks {flag}"
        for section in ("## Inputs and outputs", "## Options", "## Exit codes", "## Rerun"):
            assert section in page, f"{stage}.md lacks {section!r}"


def test_options_say_whether_they_change_outputs(pages):
    """A speed switch reads `no`, an output setting `yes` (from setting(output=...))."""
    rows = {
        ln.split(" | ")[0]: ln for ln in pages["edit.md"].splitlines() if ln.startswith("| `--")
    }
    assert "| on | no |" in rows["| `--compile` / `--no-compile`"]
    assert "| `50` | yes |" in rows["| `--steps`"]
    rows = {
        ln.split(" | ")[0]: ln for ln in pages["segment.md"].splitlines() if ln.startswith("| `--")
    }
    assert "| `auto` | no |" in rows["| `--device`"]


def test_a_missing_setting_fails_the_generator():
    """A Config setting the parser does not accept is an error, not a silent gap."""
    import argparse

    parser = argparse.ArgumentParser(prog="lanepaint evaluate")
    parser.add_argument("--edit-dir")
    with pytest.raises(RuntimeError, match="max_frames"):
        ref.split_actions(parser, ref.load_config("evaluate"))


def test_every_pipeline_has_a_valid_example(pages):
    specs = ref.compiled_specs()
    assert set(specs) == {p.stem for p in (ref.PARTS / "params").glob("*.yaml")}
    for name, spec in specs.items():
        example = yaml.safe_load((ref.PARTS / "params" / f"{name}.yaml").read_text())
        check_params(spec, example)  # what `lanepaint kfp run --params` checks
        assert f"## `{name}`" in pages["pipelines.md"]
        for param in spec["root"]["inputDefinitions"]["parameters"]:
            assert f"| `{param}` |" in pages["pipelines.md"]


def test_an_invalid_example_fails_the_generator():
    spec = ref.compiled_specs()["filter-dataset"]
    with pytest.raises(UsageError):
        check_params(spec, {"input_dir": "gs://b/ds", "no_such_parameter": 1})
    with pytest.raises(RuntimeError, match="missing required"):
        ref.check_example("filter-dataset", spec, "count: single\n")


def test_pages_are_deterministic(pages):
    again = ref.pages()
    assert again == pages
    for name, text in pages.items():
        assert str(ref.REPO) not in text, f"{name} holds an absolute path"
        assert "/tmp/" not in text and "/home/" not in text and "/root/" not in text, name


def test_a_changed_or_orphaned_page_is_stale(pages, tmp_path):
    for name, text in pages.items():
        (tmp_path / name).write_text(text)
    assert ref.stale_pages(pages, tmp_path) == []
    (tmp_path / "edit.md").write_text(pages["edit.md"].replace("| `50` |", "| `40` |"))
    (tmp_path / "old-stage.md").write_text(pages["evaluate.md"])  # a stage that was removed
    (tmp_path / "notes.md").write_text("# hand-written, not generated\n")
    assert ref.stale_pages(pages, tmp_path) == ["edit.md", "old-stage.md"]
