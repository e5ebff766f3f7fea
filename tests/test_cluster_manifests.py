"""manifests/ without a cluster: every file parses, the kustomization lists exactly the files
there, names agree with components/settings.yaml, and nothing carries a credential."""

import re
from pathlib import Path

import pytest
import yaml

from components import settings as cfg

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
KUSTOMIZATION = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


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
