"""Cluster-side settings applied to every task, read from ``settings.yaml`` beside this file."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import yaml
from kfp import kubernetes

SETTINGS_FILE = Path(__file__).with_name("settings.yaml")


@cache
def settings() -> dict:
    return yaml.safe_load(SETTINGS_FILE.read_text())


def stage_settings(stage: str) -> dict:
    merged = dict(settings()["defaults"])
    merged.update(settings()["stages"].get(stage, {}))
    return merged


def image_for(stage: str) -> str:
    """The stage image, tagged with LANEPAINT_IMAGE_TAG (git SHA) or the release tag."""
    s = settings()
    tag = os.environ.get("LANEPAINT_IMAGE_TAG") or s["image_tag"]
    if tag == "latest":
        raise ValueError("images are never tagged ':latest'")
    name = stage_settings(stage).get("image", stage)
    return f"{s['image_registry']}/lanepaint-{name}:{tag}"


def configure(task, stage: str):
    """Resources, retries, timeout, caching and (for GPU stages) accelerator placement."""
    st = stage_settings(stage)
    task.set_cpu_request(str(st["cpu"])).set_memory_request(str(st["memory"]))
    task.set_retry(num_retries=int(st["retries"]), backoff_duration=str(st["retry_backoff"]))
    task.set_caching_options(enable_caching=bool(st["caching"]))
    kubernetes.set_timeout(task, int(st["timeout_s"]))
    gpus = int(st.get("gpus", 0))
    if gpus:
        gpu = settings()["gpu"]
        task.set_accelerator_type(gpu["resource"]).set_accelerator_limit(gpus)
        kubernetes.add_node_selector(
            task,
            gpu["node_selector_key"],
            st.get("node_selector_value") or gpu["node_selector_value"],
        )
        kubernetes.add_toleration(task, **gpu["toleration"])
        kubernetes.empty_dir_mount(
            task,
            volume_name="dshm",
            mount_path="/dev/shm",
            medium="Memory",
            size_limit=str(st.get("shm", "16Gi")),
        )
    return task
