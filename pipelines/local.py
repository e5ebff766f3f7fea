"""Run a pipeline on this machine with the KFP local runner (`make run-local`).

By default components run as subprocesses in the current environment (the stage images are
ignored). With ``--runner docker`` each task runs in its stage image, as compiled with
``--image-tag`` (and LANEPAINT_IMAGE_REGISTRY), through kfp.local's DockerRunner; folders the
tasks read or write besides the pipeline root are bind-mounted at the same path
(``--mount PATH`` or ``PATH:ro``). Resource and kfp-kubernetes settings are ignored with a
warning, as documented by kfp.local.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import logging
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml
from kfp import components, local

from pipelines.compile import PIPELINES, compile_to

RUN_LABEL = "dev.lanepaint.local-run"  # on every container of one docker-runner run


def _drop_retries(node) -> None:
    if isinstance(node, dict):
        node.pop("retryPolicy", None)
        for value in node.values():
            _drop_retries(value)
    elif isinstance(node, list):
        for value in node:
            _drop_retries(value)


def run_local(
    name: str,
    params: dict,
    pipeline_root: str | Path,
    retries: bool = False,
    image_tag: str | None = None,
    mounts: list[str] | None = None,
):
    """Run pipeline ``name`` with ``params``; returns the pipeline's outputs (if any).

    The compiled spec is what runs (as on the cluster). Task retries are dropped unless
    ``retries``: on the cluster they absorb preemption with minutes of backoff, while a
    local failure is a real error that should surface at once. ``image_tag`` runs every task
    in its stage image with that tag (docker_run); otherwise as subprocesses here.
    """
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        if image_tag:
            from pipelines.submit import compile_package  # a fresh interpreter, that tag

            compile_package(name, path, image_tag)
        else:
            compile_to(name, path)
        if not retries:
            docs = list(yaml.safe_load_all(path.read_text()))
            _drop_retries(docs[0])
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        pipeline = components.load_component_from_file(str(path))
    if image_tag:
        return docker_run(pipeline, params, root, mounts or [])
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True
    )
    return _call(pipeline, params)


def _call(pipeline, params: dict):
    # kfp.local 2.17 indents output by swapping builtins.print per task; tasks of a
    # ParallelFor run on threads, so the swaps can interleave and leave print indented for
    # the rest of the process. Put the real one back whatever happened.
    real_print = builtins.print
    try:
        return pipeline(**params)
    finally:
        builtins.print = real_print


def docker_run(pipeline, params: dict, root: Path, mounts: list[str]):
    """Run ``pipeline`` with kfp.local's DockerRunner, and trust only the containers' own exit
    codes: kfp.local 2.17 removes each container as it exits and reports SUCCESS when the
    container is already gone at ``wait()``, so a failed task can pass. Docker's own event
    stream records every container's exit code; any that is not 0 (or missing) is an error."""
    import docker

    run_id = uuid.uuid4().hex
    binds = [bind_mount(m) for m in mounts]
    runner = local.DockerRunner(labels={RUN_LABEL: run_id}, mounts=binds, network_disabled=True)
    local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
    client = docker.from_env()
    failed = None
    try:
        with container_exits(client, run_id) as exits:
            try:
                outputs = _call(pipeline, params)
            except RuntimeError as err:  # kfp.local saw a failure: add the exit codes
                failed = err
    finally:
        client.close()
    bad = {name: code for name, code in exits.items() if code != 0}
    if failed or bad or not exits:
        raise RuntimeError(f"containers of this run exited with {bad or exits or 'nothing'}") from (
            failed
        )
    return outputs


def bind_mount(spec: str):
    """``PATH`` or ``PATH:ro`` as a bind mount at the same path inside the container."""
    import docker

    path, _, mode = spec.partition(":")
    source = str(Path(path).resolve())
    return docker.types.Mount(source, source, type="bind", read_only=mode == "ro")


@contextlib.contextmanager
def container_exits(client, run_id: str, settle_s: float = 30.0) -> Iterator[dict[str, int]]:
    """Container name -> exit code, for every container labelled with ``run_id`` that
    started while the block ran (filled from docker's events; waits up to ``settle_s`` after
    the block for the exits of containers that started)."""
    since = int(time.time()) - 1
    stream = client.events(
        since=since, decode=True, filters={"type": "container", "label": f"{RUN_LABEL}={run_id}"}
    )
    started: set[str] = set()
    exits: dict[str, int] = {}

    def collect() -> None:
        with contextlib.suppress(Exception):  # the stream ends with an error when closed
            for event in stream:
                actor = event.get("Actor", {})
                name = actor.get("Attributes", {}).get("name") or actor.get("ID", "")
                action = event.get("Action") or event.get("status")  # status: older APIs
                if action == "start":
                    started.add(name)
                elif action == "die":
                    exits[name] = int(actor.get("Attributes", {}).get("exitCode", -1))

    thread = threading.Thread(target=collect, name="docker-events", daemon=True)
    thread.start()
    try:
        yield exits
    finally:
        deadline = time.monotonic() + settle_s
        while not started <= set(exits) and time.monotonic() < deadline:
            time.sleep(0.2)
        stream.close()
        for name in started - set(exits):
            exits[name] = -1  # started, never seen to exit


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", choices=sorted(PIPELINES))
    parser.add_argument("--params", help="YAML file of pipeline arguments")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--pipeline-root", default="local-runs")
    parser.add_argument("--retries", action="store_true", help="keep the tasks' retry policies")
    parser.add_argument(
        "--runner", choices=["subprocess", "docker"], default="subprocess", help="where tasks run"
    )
    parser.add_argument("--image-tag", help="docker runner: the stage images' tag")
    parser.add_argument(
        "--mount", action="append", default=[], metavar="PATH[:ro]", help="docker runner: a bind"
    )
    args = parser.parse_args(argv)
    if args.runner == "docker" and not args.image_tag:
        parser.error("--runner docker needs --image-tag (e.g. local, from make images-local)")
    params = yaml.safe_load(Path(args.params).read_text()) if args.params else {}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = yaml.safe_load(value)
    logging.basicConfig(level=logging.INFO)
    tag = args.image_tag if args.runner == "docker" else None
    run_local(args.pipeline, params or {}, args.pipeline_root, args.retries, tag, args.mount)
    print(f"pipeline {args.pipeline} finished; artifacts under {args.pipeline_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
