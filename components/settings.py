"""Cluster-side settings applied to every task, read from ``settings.yaml`` beside this file.

Components call ``image_for(stage)`` and pipelines call ``configure(task, stage)``; nothing
else decides images, GPUs, placement, resources, retries, caching or secrets, so a compiled
pipeline can be checked against this one file (tests/test_cluster.py).
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

import yaml
from kfp import dsl, kubernetes

SETTINGS_FILE = Path(__file__).with_name("settings.yaml")
IMAGE_PREFIX = "lanepaint-"
BASE_IMAGE = "base"

STAGE_KEYS = {
    "image",
    "gpus",
    "node_selector_value",
    "cpu",
    "memory",
    "cpu_limit",
    "memory_limit",
    "shm",
    "timeout_s",
    "retries",
    "retry_backoff",
    "caching",
    "content_key",
    "secrets_env",
    "secrets_volume",
}
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# A Kubernetes resource quantity (apimachinery's grammar: a number, then a binary suffix,
# a decimal suffix or a decimal exponent; `k` is kilo, `K` alone is not a suffix).
QUANTITY = re.compile(
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(r"^[0-9]+s$")
# A label key (optional DNS-subdomain prefix, then a name) and value, as Kubernetes checks them.
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
STAGE_LABEL = "lanepaint.dev/stage"
WORKLOAD_LABEL = "lanepaint.dev/workload"


@cache
def settings() -> dict:
    """The parsed settings; refused whole if any problem is found, so nothing half-valid
    reaches a compiled pipeline."""
    data = yaml.safe_load(SETTINGS_FILE.read_text())
    problems = validate(data)
    if problems:
        raise ValueError(f"{SETTINGS_FILE}: " + "; ".join(problems))
    return data


def stages() -> list[str]:
    return list(settings()["stages"])


def stage_settings(stage: str) -> dict:
    """Defaults overlaid with the stage's own entry; unknown stages are an error, because
    silently falling back to CPU defaults would send a GPU stage to a CPU node."""
    s = settings()
    if stage not in s["stages"]:
        raise KeyError(
            f"stage {stage!r} is not in {SETTINGS_FILE.name}; known: {', '.join(s['stages'])}"
        )
    merged = dict(s["defaults"])
    merged.update(s["stages"][stage] or {})
    merged.setdefault("image", stage)
    return merged


def image_tag() -> str:
    """LANEPAINT_IMAGE_TAG (the git SHA, set by the make targets) or the release tag."""
    tag = os.environ.get("LANEPAINT_IMAGE_TAG") or settings()["image_tag"]
    if tag == "latest" or not _TAG.match(tag):
        raise ValueError(f"invalid image tag {tag!r} (never ':latest')")
    return tag


def image_registry() -> str:
    """LANEPAINT_IMAGE_REGISTRY (`make ... REGISTRY=`) or the settings' registry."""
    return os.environ.get("LANEPAINT_IMAGE_REGISTRY") or settings()["image_registry"]


def image_ref(image: str, tag: str | None = None, registry: str | None = None) -> str:
    """``<registry>/lanepaint-<image>:<tag>``."""
    tag = tag or image_tag()
    if tag == "latest" or not _TAG.match(tag):
        raise ValueError(f"invalid image tag {tag!r} (never ':latest')")
    return f"{registry or image_registry()}/{IMAGE_PREFIX}{image}:{tag}"


def image_for(stage: str) -> str:
    """The stage image, tagged with LANEPAINT_IMAGE_TAG (git SHA) or the release tag."""
    return image_ref(stage_settings(stage)["image"])


def stage_images() -> dict[str, list[str]]:
    """Image name -> the stages that run in it (what `make images` builds besides base)."""
    out: dict[str, list[str]] = {}
    for stage in stages():
        out.setdefault(stage_settings(stage)["image"], []).append(stage)
    return out


def pod_labels(stage: str) -> dict[str, str]:
    """The labels a task's pod carries: settings' ``pod.labels``, the stage and the kind of
    work (``gpu-batch`` or ``cpu-batch``, what a priority or quota policy selects on)."""
    workload = "gpu-batch" if int(stage_settings(stage)["gpus"]) else "cpu-batch"
    return {**settings()["pod"]["labels"], STAGE_LABEL: stage, WORKLOAD_LABEL: workload}


def configure(task, stage: str):
    """Resources, retries, timeout, caching, secrets, the non-root security context and pod
    labels, and (for GPU stages) accelerator, node selector, toleration and an enlarged
    /dev/shm."""
    st = stage_settings(stage)
    pod = settings()["pod"]
    kubernetes.set_security_context(
        task, run_as_user=pod["run_as_user"], run_as_group=pod["run_as_group"], run_as_non_root=True
    )
    for key, value in pod_labels(stage).items():
        kubernetes.add_pod_label(task, key, value)
    task.set_cpu_request(str(st["cpu"])).set_memory_request(str(st["memory"]))
    if st.get("cpu_limit"):
        task.set_cpu_limit(str(st["cpu_limit"]))
    if st.get("memory_limit"):
        task.set_memory_limit(str(st["memory_limit"]))
    task.set_retry(num_retries=int(st["retries"]), backoff_duration=str(st["retry_backoff"]))
    content_key = st.get("content_key")
    if content_key and content_key not in task.inputs:
        raise ValueError(
            f"stage {stage!r} is cached on input {content_key!r}, which the task does not get"
        )
    task.set_caching_options(enable_caching=bool(content_key))
    kubernetes.set_timeout(task, int(st["timeout_s"]))
    for entry in st.get("secrets_env") or []:
        kubernetes.use_secret_as_env(
            task, entry["secret"], dict(entry["keys"]), optional=bool(entry.get("optional"))
        )
    for entry in st.get("secrets_volume") or []:
        kubernetes.use_secret_as_volume(
            task, entry["secret"], entry["mount_path"], optional=bool(entry.get("optional"))
        )
    pull_secrets = settings().get("image_pull_secrets") or []
    if pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(pull_secrets))
    gpus = int(st["gpus"])
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
            size_limit=str(st["shm"]),
        )
    return task


def validate(data: dict) -> list[str]:
    """Problems in a settings document (empty when valid)."""
    problems: list[str] = []
    for key in (
        "image_registry",
        "image_tag",
        "pod",
        "gpu",
        "defaults",
        "stages",
        "cluster",
        "schedule",
    ):
        if key not in data:
            problems.append(f"missing {key!r}")
    if problems:
        return problems
    if data["image_tag"] == "latest" or not _TAG.match(str(data["image_tag"])):
        problems.append(f"image_tag {data['image_tag']!r} is not a pinned tag")
    for name in data.get("image_pull_secrets") or []:
        if not _DNS_NAME.match(str(name)):
            problems.append(f"image pull secret {name!r} is not a Kubernetes name")
    problems += _pod_problems(data["pod"])
    defaults = data["defaults"]
    gpus_by_image: dict[str, set[int]] = {}
    for stage, own in data["stages"].items():
        own = own or {}
        where = f"stages.{stage}"
        unknown = set(own) - STAGE_KEYS
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        st = {**defaults, **own}
        for key in ("cpu", "memory", "cpu_limit", "memory_limit", "shm"):
            if st.get(key) is not None and not QUANTITY.match(str(st[key])):
                problems.append(f"{where}.{key}: {st[key]!r} is not a Kubernetes quantity")
        if not isinstance(st.get("gpus"), int) or st["gpus"] < 0:
            problems.append(f"{where}.gpus must be a non-negative integer")
        if not isinstance(st.get("retries"), int) or st["retries"] < 0:
            problems.append(f"{where}.retries must be a non-negative integer")
        if not isinstance(st.get("timeout_s"), int) or st["timeout_s"] <= 0:
            problems.append(f"{where}.timeout_s must be a positive integer")
        if not _DURATION.match(str(st.get("retry_backoff"))):
            problems.append(f"{where}.retry_backoff must look like '60s'")
        if st.get("caching") and not st.get("content_key"):
            problems.append(f"{where}: caching needs a content_key (inputs are mutable)")
        problems += _secret_problems(where, st.get("secrets_env"), st.get("secrets_volume"))
        gpus_by_image.setdefault(own.get("image", stage), set()).add(st.get("gpus"))
    for image, counts in gpus_by_image.items():
        if len(counts) > 1:
            problems.append(f"image {image!r} is shared by stages with different GPU counts")
    return problems


def _pod_problems(pod: dict) -> list[str]:
    """A non-root uid/gid and labels Kubernetes accepts (the stage labels are added)."""
    problems = []
    for key in ("run_as_user", "run_as_group"):
        value = pod.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            problems.append(f"pod.{key} must be a positive integer (never root)")
    labels = pod.get("labels") or {}
    for key, value in labels.items():
        if not _LABEL_KEY.match(str(key)) or not _LABEL_VALUE.match(str(value)):
            problems.append(f"pod.labels: {key}={value!r} is not a Kubernetes label")
    if {STAGE_LABEL, WORKLOAD_LABEL} & set(labels):
        problems.append(f"pod.labels: {STAGE_LABEL} and {WORKLOAD_LABEL} are set per task")
    unknown = set(pod) - {"run_as_user", "run_as_group", "labels"}
    if unknown:
        problems.append(f"pod: unknown keys {sorted(unknown)}")
    return problems


def _secret_problems(where: str, env: list | None, volume: list | None) -> list[str]:
    """Secrets are referenced by name; any other field (a value, data) is refused."""
    problems = []
    for entry in env or []:
        if set(entry) - {"secret", "keys", "optional"} or not entry.get("keys"):
            problems.append(f"{where}.secrets_env: only secret, keys, optional are allowed")
            continue
        if not _DNS_NAME.match(str(entry.get("secret"))):
            problems.append(f"{where}.secrets_env: bad secret name {entry.get('secret')!r}")
        for env_var in entry["keys"].values():
            if not _ENV_NAME.match(str(env_var)):
                problems.append(f"{where}.secrets_env: bad env var {env_var!r}")
    for entry in volume or []:
        if set(entry) - {"secret", "mount_path", "optional"}:
            problems.append(f"{where}.secrets_volume: only secret, mount_path, optional")
            continue
        if not _DNS_NAME.match(str(entry.get("secret"))):
            problems.append(f"{where}.secrets_volume: bad secret name {entry.get('secret')!r}")
        if not str(entry.get("mount_path", "")).startswith("/"):
            problems.append(f"{where}.secrets_volume: mount_path must be absolute")
    return problems


def stage_component(image: str, config_cls: type, summary: str, extra=None, rename=None):
    """``@dsl.component`` in the stage's image, its ``Args:`` help taken from the stage's
    Config (lanepaint.kit.settings.component_doc); the one way a stage component is made."""
    from lanepaint.kit.settings import component_doc

    def decorate(func):
        documented = component_doc(config_cls, summary, extra, rename)(func)
        return dsl.component(base_image=image_for(image), install_kfp_package=False)(documented)

    return decorate
