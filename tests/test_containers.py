"""The stage images for real: each one's CLI and imports, and the stages' compiled
components run in their images through kfp.local's DockerRunner on the smoke model set.

`make test` builds every image first (images/local.py, tag `local`) with an engine it
starts if needed, and sets LANEPAINT_REQUIRE_CONTAINERS, so there a missing engine or image
fails; a plain pytest without an engine skips this module with the reason.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_train_lora import make_train_dataset

from components import settings as cfg
from lanepaint.data import fluxfill
from lanepaint.data.synth import SceneSpec, render_clip
from lanepaint.io.video import write_video
from pipelines import local as local_runner

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lanepaint_images_local", REPO / "images/local.py")
images_local = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(images_local)

REQUIRED = os.environ.get("LANEPAINT_REQUIRE_CONTAINERS") == "1"
UID = cfg.settings()["pod"]["run_as_user"]
pytestmark = [pytest.mark.containers, pytest.mark.slow]


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (LANEPAINT_REQUIRE_CONTAINERS=1: make test needs them)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def client():
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        _unavailable(f"no container engine ({err.__class__.__name__}); make images-local")
    yield client
    client.close()


def ref(image: str) -> str:
    return cfg.image_ref(image, images_local.TAG, images_local.REGISTRY)


@pytest.fixture(scope="module")
def images(client):
    """Every image `make images-local` builds, present here."""
    import docker

    wanted = [cfg.BASE_IMAGE, *cfg.stage_images()]
    missing = []
    for image in wanted:
        try:
            client.images.get(ref(image))
        except docker.errors.ImageNotFound:
            missing.append(ref(image))
    if missing:
        _unavailable(f"images not built: {', '.join(missing)}; make images-local")
    return wanted


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    from lanepaint.models.smoke import build_smoke

    # build_smoke leaves the umask's modes (0644 under make's 022): the containers' user
    # reads the model root, as it would a read-only GCS bucket.
    return Path(build_smoke(tmp_path_factory.mktemp("smoke") / "root"))


@pytest.fixture
def work(tmp_path) -> Path:
    """A folder the tasks (uid 10001) read and write, bind-mounted at its own path."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def open_up(folder: Path) -> None:
    """The containers run as the images' non-root user: let it write here."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)


def run_pipeline(name: str, params: dict, work: Path, smoke: Path, monkeypatch):
    monkeypatch.setenv("LANEPAINT_IMAGE_REGISTRY", images_local.REGISTRY)
    root = work / "root"
    root.mkdir(exist_ok=True)
    open_up(work)
    return local_runner.run_local(
        name, params, root, image_tag=images_local.TAG, mounts=[str(work), f"{smoke}:ro"]
    )


CHECK = """
set -e
test "$(id -u)" = {uid}
case ":$LD_LIBRARY_PATH:" in *:/usr/local/nvidia/lib64:*) ;; *) exit 41;; esac
test "$NVIDIA_VISIBLE_DEVICES" = all
test "$LANEPAINT_IMAGE" = {image}
python -c "import kfp, kfp.kubernetes, lanepaint, sam2, torch, torchvision, diffusers, transformers"
python -c "import importlib; [importlib.import_module('lanepaint.stages.' + m) for m in {modules}]"
"""


@pytest.mark.parametrize("image", list(cfg.stage_images()))
def test_stage_image_runs_its_cli_and_imports_as_non_root(client, images, image):
    stages = cfg.stage_images()[image]
    commands = [s for s in stages if s not in ("merge", "shard")]  # helpers have no CLI
    modules = [s.replace("-", "_") for s in commands]
    script = CHECK.format(uid=UID, image=image, modules=modules)
    script += "".join(f"lanepaint {s} --help > /dev/null\n" for s in commands)
    container = client.containers.run(
        ref(image), ["bash", "-c", script], detach=True, network_disabled=True
    )
    try:
        code = container.wait()["StatusCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 0, logs
    labels = client.images.get(ref(image)).labels
    assert labels["org.opencontainers.image.title"] == f"lanepaint-{image}"
    assert labels["org.opencontainers.image.description"].endswith(",".join(stages))


def test_a_container_exit_code_is_seen_even_when_the_container_is_gone(client, images):
    """What docker_run relies on: docker's events keep the exit code of an auto-removed
    container, which kfp.local 2.17 may report as SUCCESS."""
    import docker

    run_id = uuid.uuid4().hex
    with local_runner.container_exits(client, run_id) as exits:
        for code in (0, 3):
            container = client.containers.run(
                ref("cpu"),
                ["sh", "-c", f"exit {code}"],
                labels={local_runner.RUN_LABEL: run_id},
                auto_remove=True,
                detach=True,
            )
            with contextlib.suppress(docker.errors.NotFound):  # may be gone already
                container.wait()
    assert sorted(exits.values()) == [0, 3]


def test_a_failing_task_fails_the_docker_run(images, work, smoke_root, monkeypatch):
    """A task that fails inside its container (a missing input; the component raises, the
    executor exits 1) fails the run, and the error names the container's exit code."""
    missing = work / "no-such-dataset"
    with pytest.raises(RuntimeError, match=r"exited with \{'[^']+': 1\}"):
        run_pipeline("filter-dataset", {"input_dir": str(missing)}, work, smoke_root, monkeypatch)
    assert not list(work.glob("no-such-dataset*"))


def test_train_pipeline_in_its_images(images, work, smoke_root, monkeypatch):
    """filter-dataset (cpu image) -> train-lora, as compiled, on the smoke FLUX.1-Fill."""
    raw = make_train_dataset(str(work / "raw"), n=5)
    out = work / "lora-run"
    params = {
        "input_dir": raw,
        "model_root": str(smoke_root),
        "output_dir": str(out),
        "color": "white",
        "rank": 4,
        "alpha": 4.0,
        "max_train_steps": 2,
        "warmup_steps": 1,
        "resolution": 48,
        "mixed_precision": "no",
        "checkpointing_steps": 1,
    }
    run_pipeline("train", params, work, smoke_root, monkeypatch)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["details"]["status"] == "complete" and summary["model_set"] == "smoke"
    assert summary["details"]["train_data"].startswith(raw + "__")
    assert (out / "lora" / "pytorch_lora_weights.safetensors").stat().st_uid == UID
    filtered = json.loads(next((work / "root").rglob("filter-dataset/dataset")).read_text())
    rows, _ = fluxfill.read_dataset(filtered["uri"])
    assert rows


def test_edit_pipeline_in_its_images(images, work, smoke_root, monkeypatch):
    """segment -> shard -> edit -> merge -> evaluate, each in its image, as compiled. The
    classical segmenter: the smoke SAM2 marks every pixel as road (see the next test)."""
    clip = write_clip(work / "in" / "chunk_0000" / "clip.mp4")
    out = work / "vp"
    params = {
        "videos": [str(clip)],
        "model_root": str(smoke_root),
        "segmenter": "classical",
        "max_frames": 2,
        "output_dir": str(out),
        "instruction": "lane single white dashed",
        "num_shards": 1,
        "max_attempts": 1,
        "steps": 2,
        "first_frame_steps": 2,
    }
    run_pipeline("edit", params, work, smoke_root, monkeypatch)
    rows = list(csv.DictReader((out / "meta.csv").open()))
    assert [(r["video_id"], r["frames"]) for r in rows] == [("clip", "2")]
    edits = out.parent / "vp__edits"
    merged = json.loads((edits / "summary.json").read_text())
    assert (merged["done"], merged["failed"], merged["model_set"]) == (1, 0, "smoke"), merged
    record = json.loads((edits / "clip" / "single_white_dashed" / "record.json").read_text())
    assert record["frames"] == 2 and record["model_set"] == "smoke"
    evaluation = json.loads((edits / "_evaluation" / "summary.json").read_text())
    assert evaluation["done"] == 1 and (edits / "_evaluation" / "report.html").is_file()


def test_dataset_build_pipeline_in_its_images(images, work, smoke_root, monkeypatch):
    """shard -> build-dataset (SAM2 + the smoke VLM) -> merge -> filter-dataset, as compiled."""
    from lanepaint.data.synth import write_chunks

    source = work / "source"
    write_chunks(source, chunks=1, per_chunk=2, frames=4, fps=8, width=96, height=64, seed=5)
    out = work / "datasets" / "run1"
    params = {
        "source": str(source),
        "output_root": str(work / "datasets"),
        "output_dir": str(out),
        "model_root": str(smoke_root),
        "num_shards": 1,
        "frame_numbers": "0",
        "min_coverage": 0.0,
        "segmenter": "sam2",
        "captioner": "vlm",
        "require_clear_road": False,
    }
    run_pipeline("dataset-build", params, work, smoke_root, monkeypatch)
    rows, rejected = fluxfill.read_dataset(str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["model_set"]) == (2, 0, "smoke")
    assert len(rows) == 2 and not rejected
    assert (Path(str(out) + "__all") / "train.csv").is_file()


def write_clip(path: Path) -> Path:
    video, _ = render_clip(SceneSpec(width=96, height=64), 4, 8.0)
    path.parent.mkdir(parents=True)
    write_video(path, video, 8.0)
    return path


def run_component(module: str, name: str, params: dict, work: Path, smoke: Path, tmp: Path):
    """A stage's component alone, compiled in a fresh interpreter with the local images."""
    from kfp import components

    spec = tmp / f"{name}.yaml"
    env = {**os.environ, "LANEPAINT_IMAGE_TAG": images_local.TAG}
    env["LANEPAINT_IMAGE_REGISTRY"] = images_local.REGISTRY
    code = f"import sys; from kfp import compiler; from components.{module} import {name}; "
    code += f"compiler.Compiler().compile({name}, sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(spec)], cwd=REPO, env=env, check=True)
    assert ref(cfg.stage_settings(module.replace("_", "-"))["image"]) in spec.read_text()
    (work / "root").mkdir(exist_ok=True)
    open_up(work)
    component = components.load_component_from_file(str(spec))
    return local_runner.docker_run(component, params, work / "root", [str(work), f"{smoke}:ro"])


def test_segment_component_with_sam2_in_its_image(images, work, smoke_root, tmp_path):
    """The SAM2 video predictor (smoke weights, sam2's own configs) inside the image."""
    clip = write_clip(work / "in" / "clip.mp4")
    out = work / "vp"
    params = {"videos": [str(clip)], "model_root": str(smoke_root), "max_frames": 2}
    task = run_component(
        "segment", "segment", {**params, "output_dir": str(out)}, work, smoke_root, tmp_path
    )
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["model_set"]) == (1, "smoke")
    assert summary["details"]["frames_segmented"] == 2
    assert (out / "mask_root" / "clip" / "all_masks.npz").stat().st_uid == UID
    assert json.loads(Path(task.outputs["layout"].path).read_text())["uri"] == str(out)


def test_caption_component_in_its_image(images, work, smoke_root, tmp_path):
    """caption is in no pipeline: its compiled component alone, in its image."""
    folder = work / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("a.png", (48, 64, 3)), ("gray.png", (40, 40))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"not an image")
    params = {"images": [str(folder)], "model_root": str(smoke_root), "batch_size": 2}
    task = run_component("caption", "caption", params, work, smoke_root, tmp_path)
    lines = Path(task.outputs["captions"].path).read_text().splitlines()
    assert len(lines) == 3
    assert "captioned" in Path(task.outputs["report"].path).read_text()
