"""A stage setting is declared once (its Config); components and pipelines must agree.

Checks, on freshly compiled pipeline specs:
- every component parameter named after a setting defaults to the Config's default;
- every component parameter has a description (the KFP UI's parameter help);
- every pipeline parameter bound to a component input has that input's default;
- every pipeline exposes the speed switches of the stages it runs.
Each checker is also run on a deliberately drifted fake, to prove it catches drift.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

import pytest
import yaml

import components
from lanepaint.kit import setting
from lanepaint.kit.settings import component_defaults_drift, component_doc
from pipelines.compile import PIPELINES, compile_to

CHANNEL = "pipelinechannel--"
# component -> parameters a user sets for speed (docs/performance.md); each pipeline that
# runs the component must expose them as pipeline parameters.
SPEED_SWITCHES = {
    "train-lora": ("compile", "attention_backend", "activation_memory_budget"),
    "segment": ("compile_tracking",),
    "edit-shard": ("compile", "parallel_items"),
}


def stage_components():
    for info in pkgutil.iter_modules(components.__path__):
        module = importlib.import_module(f"components.{info.name}")
        for value in vars(module).values():
            func = getattr(value, "python_func", None)
            if func is not None and func.__module__ == module.__name__:
                yield func


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, dict]:
    out = {}
    for name in PIPELINES:
        path = compile_to(name, tmp_path_factory.mktemp(name) / "p.yaml")
        out[name] = next(yaml.safe_load_all(path.read_text()))
    return out


# Pipeline defaults chosen on purpose to differ from the stage's own (parameter -> why).
PIPELINE_CHOICES = {
    "require_clear_road": "pipelines that make training data keep only rows whose lane "
    "attributes are all known",
}


def tasks_of(spec: dict):
    """(component name, task inputs) of every task at every DAG level."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for task in dag["tasks"].values():
            yield task["componentRef"]["name"], task.get("inputs", {}).get("parameters", {})


def pipeline_drift(spec: dict) -> list[str]:
    root = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    problems = []
    for comp, bindings in tasks_of(spec):
        params = spec["components"][comp].get("inputDefinitions", {}).get("parameters", {})
        for name, binding in bindings.items():
            source = binding.get("componentInputParameter", "").removeprefix(CHANNEL)
            theirs, ours = params.get(name, {}), root.get(source, {})
            if source in PIPELINE_CHOICES:
                continue
            if "defaultValue" in theirs and "defaultValue" in ours:
                if theirs["defaultValue"] != ours["defaultValue"]:
                    problems.append(
                        f"pipeline parameter {source}={ours['defaultValue']!r} but "
                        f"{comp}.{name} defaults to {theirs['defaultValue']!r}"
                    )
    return problems


def undocumented(spec: dict) -> list[str]:
    out = []
    for comp, body in spec["components"].items():
        if "dag" in body:
            continue
        for name, p in body.get("inputDefinitions", {}).get("parameters", {}).items():
            if not p.get("description"):
                out.append(f"{comp}.{name}")
    return out


def unexposed_switches(spec: dict) -> list[str]:
    out = []
    for comp, bindings in tasks_of(spec):
        for switch in SPEED_SWITCHES.get(comp.removeprefix("comp-"), ()):
            bound = bindings.get(switch, {}).get("componentInputParameter", "")
            if not bound:
                out.append(f"{comp}.{switch}")
    return out


def test_component_defaults_follow_the_stage_configs():
    funcs = list(stage_components())
    configured = [f for f in funcs if hasattr(f, "lanepaint_config")]
    assert len(configured) >= 7, [f.__name__ for f in configured]
    problems = [p for f in configured for p in component_defaults_drift(f)]
    assert problems == []


def test_every_component_parameter_has_help(specs):
    missing = sorted({m for spec in specs.values() for m in undocumented(spec)})
    assert missing == []


def test_pipeline_defaults_follow_the_components(specs):
    problems = [f"{n}: {p}" for n, spec in specs.items() for p in pipeline_drift(spec)]
    assert problems == []


def test_pipelines_expose_the_speed_switches(specs):
    missing = [f"{n}: {m}" for n, spec in specs.items() for m in unexposed_switches(spec)]
    assert missing == []


# --- the checkers catch drift -----------------------------------------------------------


@dataclass(frozen=True)
class FakeConfig:
    max_frames: int = setting(0, help="frames per video (0 = all)")
    names: tuple[str, ...] = setting(("a",), help="names")


def test_a_drifted_component_default_is_caught():
    @component_doc(FakeConfig, "Fake.")
    def fake(max_frames: int = -1, names: str = "a"):  # -1 meant "all" here once
        pass

    assert component_defaults_drift(fake) == [
        "fake.max_frames defaults to -1, FakeConfig.max_frames to 0"
    ]


def test_a_drifted_pipeline_default_is_caught():
    spec = {
        "root": {
            "inputDefinitions": {"parameters": {"max_frames": {"defaultValue": 150}}},
            "dag": {
                "tasks": {
                    "edit": {
                        "componentRef": {"name": "comp-edit-shard"},
                        "inputs": {
                            "parameters": {"max_frames": {"componentInputParameter": "max_frames"}}
                        },
                    }
                }
            },
        },
        "components": {
            "comp-edit-shard": {
                "inputDefinitions": {"parameters": {"max_frames": {"defaultValue": 0}}}
            }
        },
    }
    assert pipeline_drift(spec) == [
        "pipeline parameter max_frames=150 but comp-edit-shard.max_frames defaults to 0"
    ]
    assert unexposed_switches(spec) == [
        "comp-edit-shard.compile",
        "comp-edit-shard.parallel_items",
    ]
    assert undocumented(spec) == ["comp-edit-shard.max_frames"]
