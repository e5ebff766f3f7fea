"""Component settings and compiled pipelines against them: every GPU task carries its
accelerator, node selector, toleration and /dev/shm; every task runs non-root with its pod
labels; each executor's kubernetes config parses strictly; images come from settings with a
pinned tag; caching only with a content key; secrets only by name."""

import copy
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl

from components import settings as cfg
from pipelines import compile as pc
from pipelines.submit import check_compiled, load_package, strict_parse

PRODUCT_STAGES = {
    "segment": True,
    "caption": True,
    "build-dataset": True,
    "filter-dataset": False,
    "train-lora": True,
    "edit": True,
    "evaluate": True,
}  # stage -> runs on a GPU


@pytest.fixture(autouse=True)
def _release_images(monkeypatch):
    """Tests compare against the release tag and the settings' registry."""
    monkeypatch.delenv("LANEPAINT_IMAGE_TAG", raising=False)
    monkeypatch.delenv("LANEPAINT_IMAGE_REGISTRY", raising=False)


@pytest.fixture
def patched_settings(tmp_path, monkeypatch):
    """Edit a copy of settings.yaml for one test; returns a function taking the edit."""

    def apply(edit) -> dict:
        data = copy.deepcopy(yaml.safe_load(cfg.SETTINGS_FILE.read_text()))
        edit(data)
        path = tmp_path / "settings.yaml"
        path.write_text(yaml.safe_dump(data))
        monkeypatch.setattr(cfg, "SETTINGS_FILE", path)
        cfg.settings.cache_clear()
        return data

    yield apply
    cfg.settings.cache_clear()


def _component(stage: str):
    """A trivial component in ``stage``'s image, with an input usable as a content key."""

    def body(x: str, digest: str = "") -> str:
        return x + digest

    body.__name__ = body.__qualname__ = "step_" + stage.replace("-", "_")
    return dsl.component(body, base_image=cfg.image_for(stage), install_kfp_package=False)


def _compile(tmp_path: Path, stages: list[str], configured: bool = True) -> tuple[list, str]:
    """Compile a pipeline with one task per stage (inside a ParallelFor, like a fan-out)."""
    comps = {s: _component(s) for s in stages}

    @dsl.pipeline(name="all-stages")
    def pipeline(x: str = "a"):
        with dsl.ParallelFor(["1", "2"]) as item:
            for stage, comp in comps.items():
                task = comp(x=item).set_display_name(stage)
                if configured:
                    cfg.configure(task, stage)

    path = tmp_path / "all-stages.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return load_package(path)


def _gpu_executors(docs: list) -> dict[str, tuple[dict, dict]]:
    executors = docs[0]["deploymentSpec"]["executors"]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {
        name: (ex["container"], platform.get(name, {}))
        for name, ex in executors.items()
        if ex["container"].get("resources", {}).get("accelerator")
    }


def test_settings_cover_every_stage_and_are_valid():
    data = yaml.safe_load(cfg.SETTINGS_FILE.read_text())
    assert cfg.validate(data) == []
    for stage, gpu in PRODUCT_STAGES.items():
        assert (cfg.stage_settings(stage)["gpus"] > 0) == gpu, stage
    for helper in ("merge", "shard"):
        assert cfg.stage_settings(helper)["gpus"] == 0
        assert cfg.stage_settings(helper)["image"] == "cpu"
    assert data["gpu"]["node_selector_value"] == "nvidia-tesla-a100"  # the A100 pool
    for stage in cfg.stages():
        st = cfg.stage_settings(stage)
        if st["gpus"]:
            assert cfg.image_for(stage).split("/")[-1].startswith(f"lanepaint-{stage}:")


def test_unknown_stage_is_an_error_not_cpu_defaults():
    with pytest.raises(KeyError, match="segmnet"):
        cfg.stage_settings("segmnet")
    with pytest.raises(KeyError):
        cfg.image_for("segmnet")


def test_image_tag_comes_from_the_environment_and_is_never_latest(monkeypatch):
    monkeypatch.setenv("LANEPAINT_IMAGE_TAG", "0123456789ab")
    monkeypatch.setenv("LANEPAINT_IMAGE_REGISTRY", "europe-docker.pkg.dev/p/r")
    assert cfg.image_for("edit") == "europe-docker.pkg.dev/p/r/lanepaint-edit:0123456789ab"
    monkeypatch.setenv("LANEPAINT_IMAGE_TAG", "latest")
    with pytest.raises(ValueError, match="latest"):
        cfg.image_for("edit")
    monkeypatch.delenv("LANEPAINT_IMAGE_TAG")
    monkeypatch.delenv("LANEPAINT_IMAGE_REGISTRY")
    assert cfg.image_for("filter-dataset").endswith("/lanepaint-cpu:" + cfg.settings()["image_tag"])


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d["stages"]["edit"].update(caching=True), "content_key"),
        (lambda d: d["stages"]["edit"].update(gpu=2), "unknown keys"),
        (lambda d: d["stages"]["edit"].update(memory="lots"), "quantity"),
        (lambda d: d["stages"]["edit"].update(memory="60K"), "quantity"),
        (lambda d: d["pod"].update(run_as_user=0), "never root"),
        (lambda d: d["pod"].pop("run_as_group"), "run_as_group"),
        (lambda d: d["pod"]["labels"].update({"bad key!": "x"}), "not a Kubernetes label"),
        (lambda d: d["pod"]["labels"].update({"lanepaint.dev/stage": "x"}), "set per task"),
        (lambda d: d["pod"].update(fs_group=1), "unknown keys"),
        (lambda d: d["stages"]["edit"].update(gpus=-1), "non-negative"),
        (lambda d: d["stages"]["merge"].update(gpus=1), "shared by stages"),
        (lambda d: d.update(image_tag="latest"), "pinned tag"),
        (
            lambda d: d["stages"]["edit"].update(
                secrets_env=[{"secret": "hf", "keys": {"token": "HF_TOKEN"}, "value": "hf_x"}]
            ),
            "only secret, keys, optional",
        ),
        (
            lambda d: d["stages"]["edit"].update(
                secrets_volume=[{"secret": "Bad_Name", "mount_path": "/s"}]
            ),
            "bad secret name",
        ),
    ],
)
def test_invalid_settings_are_refused(patched_settings, edit, needle):
    with pytest.raises(ValueError, match=needle):
        patched_settings(edit)
        cfg.settings()


@pytest.mark.parametrize("name", sorted(pc.PIPELINES))
def test_every_compiled_pipeline_matches_settings(name):
    docs, text = load_package(pc.COMPILED / f"{name}.yaml")
    assert check_compiled(docs, expected_tag=cfg.settings()["image_tag"], text=text) == []


@pytest.mark.parametrize("name", sorted(pc.PIPELINES))
def test_every_compiled_task_runs_non_root_with_pod_labels(name):
    docs, _ = load_package(pc.COMPILED / f"{name}.yaml")
    assert strict_parse(docs) == []
    executors = docs[0]["deploymentSpec"]["executors"]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(platform) == set(executors)
    pod = cfg.settings()["pod"]
    for label, config in platform.items():
        assert config["securityContext"] == {
            "runAsUser": str(pod["run_as_user"]),
            "runAsGroup": str(pod["run_as_group"]),
            "runAsNonRoot": True,
        }, label
        labels = config["podMetadata"]["labels"]
        assert labels.items() >= pod["labels"].items()
        gpu = bool(executors[label]["container"].get("resources", {}).get("accelerator"))
        assert labels[cfg.WORKLOAD_LABEL] == ("gpu-batch" if gpu else "cpu-batch"), label
        assert labels[cfg.STAGE_LABEL] in cfg.stages()


@pytest.mark.parametrize("name", sorted(pc.PIPELINES))
def test_every_compiled_quantity_is_a_kubernetes_quantity(name):
    """What the backend copies into the pod spec (requests, limits, /dev/shm size)."""
    docs, _ = load_package(pc.COMPILED / f"{name}.yaml")
    quantities = [
        value
        for ex in docs[0]["deploymentSpec"]["executors"].values()
        for key, value in ex["container"].get("resources", {}).items()
        if key.startswith("resource")
    ]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    quantities += [m["sizeLimit"] for p in platform for m in p.get("emptyDirMounts", [])]
    assert quantities
    assert [q for q in quantities if not cfg.QUANTITY.match(str(q))] == []
    assert not cfg.QUANTITY.match("60K") and cfg.QUANTITY.match("60k")


def test_a_misspelt_kubernetes_field_fails_the_strict_parse(tmp_path):
    """The PlatformSpec keeps executor configs as Structs: only the KubernetesExecutorConfig
    parse notices a field the backend would silently ignore."""
    docs, text = _compile(tmp_path, ["edit"])
    (config,) = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    assert strict_parse(docs) == [] and check_compiled(docs, text=text) == []
    config["nodeSelectors"] = config.pop("nodeSelector")
    (problem,) = strict_parse(docs)
    assert "KubernetesExecutorConfig" in problem and "nodeSelectors" in problem
    assert check_compiled(docs, text=text) == [problem]
    config["nodeSelector"] = config.pop("nodeSelectors")
    config["securityContext"]["runAsUser"] = "root"
    assert "runAsUser" in strict_parse(docs)[0]
    config["securityContext"] = {"runAsUser": "0", "runAsGroup": "0"}
    (problem,) = check_compiled(docs, text=text)
    assert "security_context" in problem


def test_every_stage_compiles_with_its_gpu_placement(tmp_path):
    docs, text = _compile(tmp_path, cfg.stages())
    assert check_compiled(docs, expected_tag=cfg.settings()["image_tag"], text=text) == []
    gpu = cfg.settings()["gpu"]
    gpu_execs = _gpu_executors(docs)
    gpu_stages = [s for s in cfg.stages() if cfg.stage_settings(s)["gpus"]]
    assert len(gpu_execs) == len(gpu_stages)
    for container, platform in gpu_execs.values():
        stage = next(s for s in gpu_stages if f"/lanepaint-{s}:" in container["image"])
        st = cfg.stage_settings(stage)
        acc = container["resources"]["accelerator"]
        assert acc["resourceType"] == "nvidia.com/gpu"
        assert acc["resourceCount"] == str(st["gpus"])
        want = st.get("node_selector_value") or gpu["node_selector_value"]
        assert platform["nodeSelector"]["labels"] == {gpu["node_selector_key"]: want}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
            platform["tolerations"]
        )
        shm = [m for m in platform["emptyDirMounts"] if m["mountPath"] == "/dev/shm"]
        assert shm == [
            {
                "medium": "Memory",
                "mountPath": "/dev/shm",
                "sizeLimit": st["shm"],
                "volumeName": "dshm",
            }
        ]
        assert platform["activeDeadlineSeconds"] == str(st["timeout_s"])
    assert cfg.stage_settings("edit")["node_selector_value"] == "nvidia-a100-80gb"


def test_a_task_without_configure_is_caught(tmp_path):
    docs, text = _compile(tmp_path, ["edit", "filter-dataset"], configured=False)
    problems = check_compiled(docs, text=text)
    edit = [p for p in problems if "lanepaint-edit" in p]
    assert edit and "accelerator" in edit[0] and "node_selector" in edit[0] and "shm" in edit[0]
    assert any("lanepaint-cpu" in p and "cpu is None" in p for p in problems)


def test_foreign_latest_and_mixed_images_are_caught(tmp_path):
    docs, text = _compile(tmp_path, ["segment", "caption"])
    executors = docs[0]["deploymentSpec"]["executors"]
    (first, ex1), (_, ex2) = sorted(executors.items())
    ex1["container"]["image"] = ex1["container"]["image"].rsplit(":", 1)[0] + ":latest"
    assert any("no pinned tag" in p for p in check_compiled(docs))
    ex1["container"]["image"] = "python:3.11"
    assert any("not a stage image" in p for p in check_compiled(docs))
    ex1["container"]["image"] = ex2["container"]["image"].rsplit(":", 1)[0] + ":other"
    assert any("several tags" in p for p in check_compiled(docs))
    assert any("is not 'v0" in p for p in check_compiled(docs, expected_tag="v0.1.0"))


def test_secret_values_in_the_yaml_are_caught(tmp_path):
    docs, text = _compile(tmp_path, ["caption"])
    (executor,) = docs[0]["deploymentSpec"]["executors"].values()
    executor["container"]["env"] = [{"name": "TOKENIZERS_PARALLELISM", "value": "false"}]
    assert check_compiled(docs) == []
    executor["container"]["env"].append({"name": "HF_TOKEN", "value": "x"})
    assert any("env HF_TOKEN looks like a secret" in p for p in check_compiled(docs))
    leaked = text + "\n# hf_" + "a" * 34 + "\n"
    assert any("credential" in p for p in check_compiled(docs, text=leaked))


def test_secrets_and_pull_secrets_compile_as_names_only(tmp_path, patched_settings):
    def edit(d):
        d["image_pull_secrets"] = ["registry-creds"]
        d["stages"]["caption"]["secrets_env"] = [
            {"secret": "lanepaint-hf", "keys": {"token": "HF_TOKEN"}}
        ]
        d["stages"]["caption"]["secrets_volume"] = [
            {"secret": "lanepaint-gcs-key", "mount_path": "/var/secrets/gcs", "optional": True}
        ]

    patched_settings(edit)
    docs, text = _compile(tmp_path, ["caption", "filter-dataset"])
    assert check_compiled(docs, text=text) == []
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    caption = next(p for name, p in platform.items() if "caption" in name)
    assert caption["secretAsEnv"][0]["secretName"] == "lanepaint-hf"
    assert caption["secretAsEnv"][0]["keyToEnv"] == [{"envVar": "HF_TOKEN", "secretKey": "token"}]
    assert caption["secretAsVolume"][0]["mountPath"] == "/var/secrets/gcs"
    for p in platform.values():
        assert [s["secretName"] for s in p["imagePullSecret"]] == ["registry-creds"]
    # and a task compiled without them no longer matches the settings
    docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] = {
        name: {k: v for k, v in p.items() if k != "secretAsEnv"} for name, p in platform.items()
    }
    assert any("secrets_env" in p for p in check_compiled(docs))


def test_caching_needs_a_content_key_the_task_receives(tmp_path, patched_settings):
    patched_settings(lambda d: d["stages"]["evaluate"].update(content_key="digest"))
    comp = _component("evaluate")

    @dsl.pipeline(name="cached")
    def cached(x: str = "a", digest: str = "sha256:0"):
        cfg.configure(comp(x=x, digest=digest), "evaluate")

    path = tmp_path / "cached.yaml"
    compiler.Compiler().compile(cached, str(path))
    docs, text = load_package(path)
    (task,) = docs[0]["root"]["dag"]["tasks"].values()
    assert task["cachingOptions"] == {"enableCache": True}
    assert check_compiled(docs, text=text) == []

    with pytest.raises(ValueError, match="digest"):  # raised while the pipeline is built

        @dsl.pipeline(name="unkeyed")
        def unkeyed(x: str = "a"):
            cfg.configure(comp(x=x), "evaluate")
