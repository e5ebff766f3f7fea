"""Submit pipelines to a KFP endpoint: runs (`make run-pipeline`), new pipeline versions for
the KFP UI (`make upload`) and recurring runs (`make schedule`).

Every command compiles the registered pipeline afresh with LANEPAINT_IMAGE_TAG set to the
image tag (the git SHA by default), so a submitted run references the images that
`make images` pushed for that commit, then checks the compiled spec against
components/settings.yaml before anything is sent. The endpoint comes from
KF_PIPELINES_ENDPOINT (or --host); the token from KF_PIPELINES_TOKEN or, in a pod, the
projected token at KF_PIPELINES_SA_TOKEN_PATH (/var/run/secrets/kubeflow/pipelines/token).

Exit status: 0 done (or the awaited run SUCCEEDED), 1 the run ended in another state,
2 bad arguments, parameters, settings or compiled spec, 3 the KFP API refused a request or
could not be reached, 124 timed out waiting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import kfp_server_api
import urllib3
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from components import settings as cfg

REPO = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_API, EXIT_TIMEOUT = 0, 1, 2, 3, 124
API_ERRORS = (kfp_server_api.ApiException, urllib3.exceptions.HTTPError)
TOKEN_ENV = "KF_PIPELINES_TOKEN"
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
TERMINAL_STATES = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}
# Credentials that must never be written into a compiled pipeline.
_SECRET_TEXT = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\"private_key\"|AKIA[0-9A-Z]{16}|ya29\.[0-9A-Za-z_-]{20,}"
    r"|hf_[A-Za-z0-9]{30,}|ghp_[A-Za-z0-9]{30,}|AIza[0-9A-Za-z_-]{35}"
)
_SECRET_ENV_NAME = re.compile(
    r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?)(_|$)", re.I
)
_FILTER_EQUALS = 1  # kfp filter.proto Predicate.Op.EQUALS


class UsageError(Exception):
    """Something the user must fix before anything is submitted (exit 2)."""


# --- image tag and compilation --------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_sha() -> str | None:
    return _git("rev-parse", "--short=12", "HEAD") or None


def resolve_image_tag(explicit: str | None = None) -> str:
    """--image-tag, else LANEPAINT_IMAGE_TAG, else the checkout's git SHA, else the release
    tag (an installed package outside a checkout)."""
    tag = explicit or os.environ.get("LANEPAINT_IMAGE_TAG") or git_sha()
    tag = tag or cfg.settings()["image_tag"]
    try:
        cfg.image_ref("base", tag)  # validates: never ':latest'
    except ValueError as err:
        raise UsageError(str(err)) from err
    return tag


def warn_if_dirty() -> None:
    """Images carry the commit's code; uncommitted changes are not in them."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    if status:
        print(
            "warning: the working tree has uncommitted changes; the images tagged with "
            "the git SHA do not contain them",
            file=sys.stderr,
        )


def compile_package(name: str, out: Path, image_tag: str) -> Path:
    """Compile registered pipeline ``name`` in a fresh interpreter: components read the image
    tag when their module is imported, so an already-imported module would keep the old one."""
    from pipelines.compile import PIPELINES

    if name not in PIPELINES:
        raise UsageError(f"unknown pipeline {name!r}; registered: {', '.join(sorted(PIPELINES))}")
    code = (
        "import sys; from pathlib import Path; from pipelines.compile import compile_to; "
        "compile_to(sys.argv[1], Path(sys.argv[2]))"
    )
    env = {**os.environ, "LANEPAINT_IMAGE_TAG": image_tag}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", code, name, str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise UsageError(f"compiling {name} failed:\n{proc.stderr[-4000:]}")
    return out


def load_package(path: Path) -> tuple[list[dict], str]:
    text = Path(path).read_text()
    return list(yaml.safe_load_all(text)), text


# --- checks on a compiled pipeline ----------------------------------------------------------


def _dag_tasks(spec: dict):
    """(task name, task spec) for every task in the root DAG and in nested DAGs."""
    dags = [spec["root"].get("dag", {})]
    dags += [c["dag"] for c in spec.get("components", {}).values() if "dag" in c]
    for dag in dags:
        yield from dag.get("tasks", {}).items()


def _expected(stage: str) -> dict:
    """What settings.yaml says a task of ``stage`` must carry once compiled."""
    st = cfg.stage_settings(stage)
    gpu = cfg.settings()["gpu"]
    pod = cfg.settings()["pod"]
    gpus = int(st["gpus"])
    exp = {
        "security_context": {  # int64 fields are strings in proto JSON
            "runAsUser": str(pod["run_as_user"]),
            "runAsGroup": str(pod["run_as_group"]),
            "runAsNonRoot": True,
        },
        "pod_labels": cfg.pod_labels(stage),
        "cpu": str(st["cpu"]),
        "memory": str(st["memory"]),
        "memory_limit": str(st["memory_limit"]) if st.get("memory_limit") else None,
        "cpu_limit": str(st["cpu_limit"]) if st.get("cpu_limit") else None,
        "accelerator": (gpu["resource"], str(gpus)) if gpus else None,
        "timeout": str(int(st["timeout_s"])),
        "retries": int(st["retries"]),
        "backoff": str(st["retry_backoff"]),
        "caching": bool(st.get("content_key")),
        "node_selector": (
            {gpu["node_selector_key"]: st.get("node_selector_value") or gpu["node_selector_value"]}
            if gpus
            else {}
        ),
        "tolerations": [dict(sorted(gpu["toleration"].items()))] if gpus else [],
        "shm": (
            [
                {
                    "medium": "Memory",
                    "mountPath": "/dev/shm",
                    "sizeLimit": str(st["shm"]),
                    "volumeName": "dshm",
                }
            ]
            if gpus
            else []
        ),
        "secrets_env": sorted(e["secret"] for e in st.get("secrets_env") or []),
        "secrets_volume": sorted(e["secret"] for e in st.get("secrets_volume") or []),
        "pull_secrets": sorted(cfg.settings().get("image_pull_secrets") or []),
    }
    return exp


def _secret_name(ref: dict) -> str:
    """A secret reference's name (``secretName`` is deprecated in favour of a parameter)."""
    constant = ref.get("secretNameParameter", {}).get("runtimeValue", {}).get("constant")
    return ref.get("secretName") or constant or ""


def _actual(container: dict, platform: dict, task: dict) -> dict:
    res = container.get("resources", {})
    acc = res.get("accelerator")
    return {
        "security_context": platform.get("securityContext"),
        "pod_labels": platform.get("podMetadata", {}).get("labels", {}),
        "cpu": res.get("resourceCpuRequest"),
        "memory": res.get("resourceMemoryRequest"),
        "memory_limit": res.get("resourceMemoryLimit"),
        "cpu_limit": res.get("resourceCpuLimit"),
        "accelerator": (acc.get("resourceType"), acc.get("resourceCount")) if acc else None,
        "timeout": platform.get("activeDeadlineSeconds"),
        "retries": task.get("retryPolicy", {}).get("maxRetryCount", 0),
        "backoff": task.get("retryPolicy", {}).get("backoffDuration"),
        "caching": bool(task.get("cachingOptions", {}).get("enableCache")),
        "node_selector": platform.get("nodeSelector", {}).get("labels", {}),
        "tolerations": [dict(sorted(t.items())) for t in platform.get("tolerations", [])],
        "shm": [m for m in platform.get("emptyDirMounts", []) if m.get("mountPath") == "/dev/shm"],
        "secrets_env": sorted(_secret_name(s) for s in platform.get("secretAsEnv", [])),
        "secrets_volume": sorted(_secret_name(s) for s in platform.get("secretAsVolume", [])),
        "pull_secrets": sorted(_secret_name(s) for s in platform.get("imagePullSecret", [])),
    }


def strict_parse(docs: list[dict]) -> list[str]:
    """The spec as PipelineSpec and PlatformSpec, and each executor's kubernetes config as
    kfp-kubernetes' KubernetesExecutorConfig, all without ignoring unknown fields: the
    PlatformSpec holds executor configs as free-form Structs, so only the last parse catches
    a misspelt field (``nodeSelectors``) that the backend would silently drop."""
    try:
        json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
        if len(docs) > 1:
            json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError as err:
        return [f"not a valid PipelineSpec/PlatformSpec: {err}"]
    problems = []
    for label, config in _platform_executors(docs).items():
        try:
            json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
        except json_format.ParseError as err:
            problems.append(f"executor {label}: not a valid KubernetesExecutorConfig: {err}")
    return problems


def _platform_executors(docs: list[dict]) -> dict[str, dict]:
    platform = (docs[1] if len(docs) > 1 else {}).get("platforms", {}).get("kubernetes", {})
    return platform.get("deploymentSpec", {}).get("executors", {})


def check_compiled(docs: list[dict], expected_tag: str | None = None, text: str = "") -> list[str]:
    """Problems in a compiled pipeline: strict proto parse (strict_parse), images from
    settings with one pinned tag, every task placed and sized as its stage's settings say
    (accelerator, node selector, toleration, /dev/shm, resources, timeout, retries, caching,
    secrets, non-root security context, pod labels) and no credential in the text."""
    problems = strict_parse(docs)
    if problems:
        return problems
    spec = docs[0]
    platform_execs = _platform_executors(docs)
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    images = cfg.stage_images()
    prefix = f"{cfg.image_registry()}/{cfg.IMAGE_PREFIX}"
    tags = {
        ex.get("container", {}).get("image", "").rpartition(":")[2] for ex in executors.values()
    }
    if len(tags) > 1:
        problems.append(f"images use several tags {sorted(tags)}; expected one")
    for task_name, task in _dag_tasks(spec):
        comp = spec.get("components", {}).get(task["componentRef"]["name"], {})
        if "executorLabel" not in comp:
            continue  # a nested DAG (ParallelFor, condition): its tasks are visited too
        label = comp["executorLabel"]
        container = executors[label].get("container", {})
        image = container.get("image", "")
        where = f"task {task_name} ({image or 'no image'})"
        repo, _, tag = image.rpartition(":")
        if not repo or "/" in tag or tag == "latest":
            problems.append(f"{where}: image has no pinned tag")
            continue
        if expected_tag and tag != expected_tag:
            problems.append(f"{where}: image tag is not {expected_tag!r}")
        name = repo.removeprefix(prefix)
        if not repo.startswith(prefix) or name not in images:
            problems.append(f"{where}: image is not a stage image from components/settings.yaml")
            continue
        for env in container.get("env", []):
            if _SECRET_ENV_NAME.search(env.get("name", "")):
                problems.append(f"{where}: env {env['name']} looks like a secret; use secrets_env")
        actual = _actual(container, platform_execs.get(label, {}), task)
        best: list[str] | None = None
        for stage in images[name]:
            exp = _expected(stage)
            diffs = [
                f"{k} is {actual[k]!r}, {stage} needs {v!r}"
                for k, v in exp.items()
                if actual[k] != v
            ]
            if best is None or len(diffs) < len(best):
                best = diffs
        if best:
            problems.append(f"{where}: " + "; ".join(best) + " (did it call configure()?)")
    if text and _SECRET_TEXT.search(text):
        problems.append("the compiled YAML contains something that looks like a credential")
    return problems


# --- parameters -----------------------------------------------------------------------------


def pipeline_inputs(spec: dict) -> dict[str, dict]:
    """Top-level parameters: name -> {type, required, default}."""
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {
        name: {
            "type": p["parameterType"],
            "required": not p.get("isOptional") and "defaultValue" not in p,
            "default": p.get("defaultValue"),
        }
        for name, p in params.items()
    }


def _coerce(name: str, kind: str, value):
    """A parameter value of the declared type; YAML dates become ISO strings."""
    if kind == "STRING":
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, str):
            return value
    elif kind == "NUMBER_INTEGER":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "NUMBER_DOUBLE":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
    elif kind == "LIST":
        if isinstance(value, list):
            return value
    elif kind == "STRUCT":
        if isinstance(value, dict):
            return value
    raise UsageError(f"parameter {name!r} must be {kind}, got {value!r}")


def check_params(spec: dict, params: dict) -> dict:
    """Params checked against the pipeline's declared inputs before anything is sent, so a
    typo fails here and not after a cluster round trip."""
    inputs = pipeline_inputs(spec)
    unknown = sorted(set(params) - set(inputs))
    if unknown:
        raise UsageError(f"unknown parameters {unknown}; the pipeline takes {sorted(inputs)}")
    missing = sorted(n for n, i in inputs.items() if i["required"] and n not in params)
    if missing:
        raise UsageError(f"missing required parameters {missing}")
    return {n: _coerce(n, inputs[n]["type"], v) for n, v in params.items()}


def read_params(path: str | None, pairs: list[str], spec: dict) -> dict:
    """--params FILE (YAML mapping) overlaid with --param KEY=VALUE, not yet checked; a STRING
    parameter given on the command line keeps its text as typed."""
    params = yaml.safe_load(Path(path).read_text()) if path else {}
    if not isinstance(params or {}, dict):
        raise UsageError(f"{path}: expected a mapping of parameter names to values")
    params = dict(params or {})
    inputs = pipeline_inputs(spec)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--param {pair!r}: expected KEY=VALUE")
        is_string = inputs.get(key, {}).get("type") == "STRING"
        params[key] = value if is_string else yaml.safe_load(value)
    return params


def describe(spec: dict, image_tag: str) -> str:
    """A version description for the KFP UI: what the pipeline does, its parameters with their
    defaults, and which commit and images it is."""
    parts = []
    for name, i in pipeline_inputs(spec).items():
        parts.append(
            f"{name}: {i['type']}"
            + (" (required)" if i["required"] else f" = {json.dumps(i['default'])}")
        )
    head = spec.get("pipelineInfo", {}).get("description", "").strip()
    sha = git_sha()
    origin = f"images :{image_tag}" + (f", git {sha}" if sha else "")
    return f"{head} [{origin}] Parameters: " + "; ".join(parts)


# --- client -------------------------------------------------------------------------------


def make_client(host: str | None = None, namespace: str | None = None):
    """kfp.Client for KF_PIPELINES_ENDPOINT with a bearer token from KF_PIPELINES_TOKEN or, in
    a pod, the projected service-account token (re-read on every request: it rotates)."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    host = host or os.environ.get("KF_PIPELINES_ENDPOINT")
    if not host and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise UsageError("set KF_PIPELINES_ENDPOINT (or --host) to the KFP API endpoint")
    kwargs: dict = {}
    token = os.environ.get(TOKEN_ENV)
    token_path = os.environ.get(SA_TOKEN_PATH_ENV) or SA_TOKEN_PATH
    if token:
        kwargs["existing_token"] = token
    elif Path(token_path).is_file():
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(token_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This client only works", category=FutureWarning)
        return kfp.Client(host=host, namespace=namespace or "kubeflow", **kwargs)


def wait_for_run(
    client, run_id: str, timeout_s: float, poll_s: float, tolerated_errors: int = 5
) -> tuple[str, object]:
    """Poll until the run reaches a terminal state (kfp's own wait misses CANCELED). A wait
    lasts as long as a training run, so a few API errors in a row (a restarting API server)
    are waited out rather than reported as a failed run."""
    deadline = time.monotonic() + timeout_s
    last, errors = None, 0
    while True:
        try:
            run = client.get_run(run_id)
            errors = 0
        except API_ERRORS as err:
            errors += 1
            if errors > tolerated_errors:
                raise
            print(
                f"warning: polling run {run_id} failed ({err.__class__.__name__})", file=sys.stderr
            )
            time.sleep(poll_s)
            continue
        state = str(run.state or "").upper()
        if state != last:
            print(f"run {run_id}: {state}", flush=True)
            last = state
        if state in TERMINAL_STATES:
            return state, run
        if time.monotonic() >= deadline:
            raise TimeoutError(f"run {run_id} still {state} after {timeout_s:g}s")
        time.sleep(poll_s)


def _equals_filter(key: str, value: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": _FILTER_EQUALS, "key": key, "stringValue": value}]}
    )


def upload_version(
    client, package: Path, pipeline_name: str, version_name: str, description: str
) -> tuple[str, str, bool]:
    """Add ``version_name`` to KFP pipeline ``pipeline_name`` (created on first upload).
    Returns (pipeline id, version id, whether it was new): re-uploading a commit is a no-op."""
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(
            str(package), pipeline_name=pipeline_name, description=description
        ).pipeline_id
    found = client.list_pipeline_versions(
        pipeline_id, filter=_equals_filter("display_name", version_name)
    ).pipeline_versions
    if found:
        return pipeline_id, found[0].pipeline_version_id, False
    version = client.upload_pipeline_version(
        str(package), version_name, pipeline_id=pipeline_id, description=description
    )
    return pipeline_id, version.pipeline_version_id, True


# --- commands -----------------------------------------------------------------------------


def package_tag(docs: list[dict]) -> str:
    """The one image tag a compiled pipeline uses."""
    tags = {
        ex.get("container", {}).get("image", "").rpartition(":")[2]
        for ex in docs[0].get("deploymentSpec", {}).get("executors", {}).values()
    }
    if len(tags) != 1:
        raise UsageError(f"expected one image tag in the package, found {sorted(tags)}")
    return tags.pop()


def _prepare(args, name: str, tmp: Path) -> tuple[Path, list[dict], str]:
    """The package to submit and its image tag: --package as given, or ``name`` compiled with
    the image tag; either way checked against settings.yaml before it is sent."""
    if args.package:
        package, tag = Path(args.package), None
    else:
        tag = resolve_image_tag(args.image_tag)
        if tag == git_sha():
            warn_if_dirty()
        package = compile_package(name, tmp / f"{name}.yaml", tag)
    docs, text = load_package(package)
    problems = check_compiled(docs, expected_tag=tag, text=text)
    if problems:
        raise UsageError(
            f"{package} does not match components/settings.yaml:\n  " + "\n  ".join(problems)
        )
    return package, docs, tag or package_tag(docs)


def cmd_run(args) -> int:
    cluster = cfg.settings()["cluster"]
    with tempfile.TemporaryDirectory() as tmp:
        package, docs, tag = _prepare(args, args.pipeline, Path(tmp))
        params = check_params(docs[0], read_params(args.params, args.param, docs[0]))
        client = make_client(args.host, args.namespace or cluster["namespace"])
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=params,
            run_name=args.run_name or f"{args.pipeline} {tag} {stamp}",
            experiment_name=args.experiment or cluster["experiment"],
            namespace=(args.namespace or cluster["namespace"]) or None,
            pipeline_root=(args.pipeline_root or cluster["pipeline_root"]) or None,
            service_account=args.service_account or cluster["service_account"],
        )
    print(f"submitted run {result.run_id} ({args.pipeline}, images :{tag})", flush=True)
    if not args.wait:
        return EXIT_OK
    try:
        state, run = wait_for_run(client, result.run_id, args.timeout, args.poll)
    except TimeoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_TIMEOUT
    if state == "SUCCEEDED":
        return EXIT_OK
    message = getattr(getattr(run, "error", None), "message", None)
    print(
        f"run {result.run_id} ended {state}" + (f": {message}" if message else ""), file=sys.stderr
    )
    return EXIT_RUN_FAILED


def cmd_upload(args) -> int:
    from pipelines.compile import PIPELINES

    cluster = cfg.settings()["cluster"]
    names = args.names or sorted(PIPELINES)
    if args.package and len(names) != 1:
        raise UsageError("--package uploads one pipeline: name it")
    client = make_client(args.host, args.namespace or cluster["namespace"])
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            package, docs, tag = _prepare(args, name, Path(tmp))
            pipeline_name = cluster["pipeline_name_prefix"] + name
            version_name = f"{pipeline_name}-{tag}"
            pid, vid, new = upload_version(
                client, package, pipeline_name, version_name, describe(docs[0], tag)
            )
            what = "uploaded" if new else "already uploaded"
            print(f"{what} {pipeline_name} version {version_name} (pipeline {pid}, version {vid})")
    return EXIT_OK


def cmd_schedule(args) -> int:
    cluster, sched = cfg.settings()["cluster"], cfg.settings()["schedule"]
    name = args.pipeline or sched["pipeline"]
    date_param = sched["date_parameter"]
    with tempfile.TemporaryDirectory() as tmp:
        package, docs, tag = _prepare(args, name, Path(tmp))
        if date_param not in pipeline_inputs(docs[0]):
            raise UsageError(
                f"pipeline {name} has no {date_param!r} parameter: every scheduled run must "
                "write under a new dated prefix"
            )
        raw = read_params(args.params, args.param, docs[0])
        if date_param in raw:
            raise UsageError(f"{date_param!r} is set per scheduled run; do not pass it")
        params = check_params(docs[0], {**raw, date_param: sched["date_value"]})
        ns = (args.namespace or cluster["namespace"]) or None
        client = make_client(args.host, ns)
        job_name = args.name or f"{cluster['pipeline_name_prefix']}{name}"
        experiment = client.create_experiment(
            args.experiment or cluster["experiment"], namespace=ns
        )
        existing = (
            client.list_recurring_runs(
                experiment_id=experiment.experiment_id,
                filter=_equals_filter("display_name", job_name),
                page_size=100,
            ).recurring_runs
            or []
        )
        enabled = [r for r in existing if r.status == "ENABLED" or r.mode == "ENABLE"]
        if enabled and not args.replace:
            ids = ", ".join(r.recurring_run_id for r in enabled)
            raise UsageError(f"recurring run {job_name!r} exists ({ids}); pass --replace")
        for r in enabled:
            client.disable_recurring_run(r.recurring_run_id)
            print(f"disabled recurring run {r.recurring_run_id}")
        rr = client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=job_name,
            description=describe(docs[0], tag),
            cron_expression=args.cron or sched["cron"],
            max_concurrency=args.max_concurrency or sched["max_concurrency"],
            no_catchup=False if args.catchup else bool(sched["no_catchup"]),
            params=params,
            pipeline_package_path=str(package),
            pipeline_root=(args.pipeline_root or cluster["pipeline_root"]) or None,
            service_account=args.service_account or cluster["service_account"],
        )
    print(
        f"created recurring run {rr.recurring_run_id} ({job_name}, cron "
        f"'{args.cron or sched['cron']}', images :{tag})"
    )
    return EXIT_OK


def build_parser(prog: str = "python -m pipelines.submit") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT)")
    common.add_argument("--namespace", help="profile namespace on multi-user KFP")
    common.add_argument("--image-tag", help="image tag to compile with (default: git SHA)")
    common.add_argument("--package", help="submit this compiled YAML instead of compiling")
    submit = argparse.ArgumentParser(add_help=False)
    submit.add_argument("--params", help="YAML file of pipeline parameters")
    submit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--experiment", help="KFP experiment (default: settings)")
    submit.add_argument("--service-account", help="Kubernetes SA for the run (default: settings)")
    submit.add_argument("--pipeline-root", help="override the kfp-launcher pipeline root")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common, submit], help="submit one run")
    run.add_argument("pipeline")
    run.add_argument("--run-name")
    run.add_argument("--wait", action="store_true", help="wait; exit with the run's status")
    run.add_argument("--timeout", type=float, default=3 * 86400, help="seconds to wait")
    run.add_argument("--poll", type=float, default=30.0, help="seconds between status checks")
    run.set_defaults(func=cmd_run)

    up = sub.add_parser("upload", parents=[common], help="upload pipelines as new versions")
    up.add_argument("names", nargs="*", help="registered pipelines (default: all)")
    up.set_defaults(func=cmd_upload)

    sc = sub.add_parser("schedule", parents=[common, submit], help="create a recurring run")
    sc.add_argument("pipeline", nargs="?", help="registered pipeline (default: settings)")
    sc.add_argument("--cron", help="six-field cron, seconds first (default: settings)")
    sc.add_argument("--name", help="recurring run name (default: <prefix><pipeline>)")
    sc.add_argument("--max-concurrency", type=int)
    sc.add_argument("--catchup", action="store_true", help="backfill missed intervals")
    sc.add_argument("--replace", action="store_true", help="disable a same-named schedule")
    sc.set_defaults(func=cmd_schedule)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """The CLI; also what `lanepaint kfp ...` calls (``prog`` "lanepaint kfp"). Returns the
    exit status."""
    try:
        args = (build_parser(prog) if prog else build_parser()).parse_args(argv)
    except SystemExit as exit_:  # --help, or argparse's own usage error
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except kfp_server_api.ApiException as err:
        body = err.body.decode(errors="replace") if isinstance(err.body, bytes) else err.body
        print(f"error: KFP API: {err.status} {err.reason}: {(body or '')[:2000]}", file=sys.stderr)
        return EXIT_API
    except urllib3.exceptions.HTTPError as err:
        print(f"error: KFP API not reachable: {err}", file=sys.stderr)
        return EXIT_API


if __name__ == "__main__":
    sys.exit(main())
