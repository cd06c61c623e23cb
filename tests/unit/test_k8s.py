"""The Kubernetes manifests: each overlay rendered by kustomize (kubectl's), every object validated against the
Kubernetes schemas (kubernetes-validate, strict: an unknown field fails), and the links between them checked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.unit.test_dockerfile import project_commands
from trocr_build import cli as build_cli
from trocr_loadtest import fleet
from trocr_serving.launcher import cli as serve_cli
from trocr_serving.launcher.server import INSTANCE_UNLOAD_S, STOP_MARGIN_S

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests target (HPA v2, PDB unhealthyPodEvictionPolicy)
DRAIN_PAUSE_S = 5  # the preStop sleep
PROXY_PORTS = {"grpc": 9001, "http": 9000}  # the pod's proxy container (deploy/k8s/base/proxy/nginx.conf)


def render(kustomization: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with its built-in kustomize) is needed to render deploy/k8s: install it")
    output = subprocess.run([kubectl, "kustomize", str(kustomization)], capture_output=True, text=True, check=True)
    return list(yaml.safe_load_all(output.stdout))


@pytest.fixture(scope="module", params=["cpu", "gpu", "gpu+repository-volume"])
def rendered(request, tmp_path_factory) -> tuple[str, dict[str, dict]]:
    overlay, _, component = request.param.partition("+")
    root = K8S / "overlays" / overlay
    if component:  # an overlay of the user's own that adds the component, as its comment says (kustomize takes
        # relative paths only: the user's overlay sits beside the shipped ones, in a copy of the tree)
        copy = tmp_path_factory.mktemp("k8s") / "k8s"
        shutil.copytree(K8S, copy)
        root = copy / "overlays" / "user"
        root.mkdir()
        (root / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [f"../{overlay}"],
                    "components": [f"../../components/{component}"],
                }
            )
        )
    return request.param, {document["kind"]: document for document in render(root)}


def test_every_object_is_valid_against_the_kubernetes_schemas(rendered):
    _, objects = rendered
    assert set(objects) == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap"}
    for document in objects.values():
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_an_invalid_field_fails_the_validation(rendered):
    _, objects = rendered
    broken = yaml.safe_load(yaml.safe_dump(objects["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paths"] = "/v2/health/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def containers(objects: dict) -> dict[str, dict]:
    return {c["name"]: c for c in objects["Deployment"]["spec"]["template"]["spec"]["containers"]}


def test_probes_are_on_tritons_health_endpoints(rendered):
    _, objects = rendered
    triton, proxy = containers(objects)["triton"], containers(objects)["proxy"]
    # Readiness through the proxy (the pod takes requests only when both serve); liveness on loopback.
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": PROXY_PORTS["http"]}
    for probe in ("startupProbe", "livenessProbe"):
        assert "http://127.0.0.1:8000/v2/health/live" in triton[probe]["exec"]["command"][-1]
    assert {port["name"]: port["containerPort"] for port in triton["ports"]} == {"metrics": 8002}
    assert {port["name"]: port["containerPort"] for port in proxy["ports"]} == PROXY_PORTS


def test_triton_listens_on_loopback_behind_the_proxy(rendered):
    """Triton 2.51 bounds no message: only the pod's proxy, which does, is reachable (metrics excepted)."""
    _, objects = rendered
    triton, proxy = containers(objects)["triton"], containers(objects)["proxy"]
    args = serve_cli.parser().parse_args(triton["args"])
    assert args.expose == "metrics"
    config = objects["ConfigMap"]["data"]["nginx.conf"]
    assert config == (K8S / "base" / "proxy" / "nginx.conf").read_text()
    assert f"client_max_body_size {fleet.MAX_BODY_BYTES};" in config  # the fleet's bound, from the request limit
    (mount,) = proxy["volumeMounts"]
    volumes = {v["name"]: v for v in objects["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mount["name"]]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    assert mount["mountPath"] == "/etc/nginx/nginx.conf" and mount["subPath"] == "nginx.conf"
    service_ports = {port["name"]: port["targetPort"] for port in objects["Service"]["spec"]["ports"]}
    assert service_ports == {"grpc": "grpc", "http": "http", "metrics": "metrics"}  # grpc, http: the proxy's


def test_termination_grace_is_longer_than_the_servers_drain_and_unload(rendered):
    variant, objects = rendered
    variant = variant.split("+")[0]
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = containers(objects)["triton"]
    args = serve_cli.parser().parse_args(container["args"])
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(DRAIN_PAUSE_S)]
    # the images' repositories: the front's instances and one scheduler (tests/unit/test_dockerfile.py)
    build = build_cli.parser().parse_args(project_commands(f"repository-{variant}", "trocr-build")[0])
    unload_s = INSTANCE_UNLOAD_S * (build.trocr_instances + 1)  # Triton's Python backend, one after another
    assert pod["terminationGracePeriodSeconds"] > DRAIN_PAUSE_S + args.exit_timeout_s + unload_s + STOP_MARGIN_S


def test_resources_per_variant(rendered):
    variant, objects = rendered
    container = containers(objects)["triton"]
    resources = container["resources"]
    if variant.startswith("gpu"):
        assert resources["limits"]["nvidia.com/gpu"] == "1" and container["image"] == "trocr-triton:gpu"
    else:
        assert "nvidia.com/gpu" not in resources["limits"] and container["image"] == "trocr-triton:cpu"
    assert resources["requests"]["cpu"] and resources["limits"]["memory"]
    target = objects["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["target"]["averageValue"]
    assert target == ("48" if variant.startswith("gpu") else "3")  # the rows demanded at the planned rate


def test_service_budget_and_autoscaler_select_the_deployments_pods(rendered):
    _, objects = rendered
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        objects["Service"]["spec"]["selector"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count


def test_the_repository_volume_replaces_the_images_repository(rendered):
    variant, objects = rendered
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    mounts = {mount["mountPath"]: mount for mount in pod["containers"][0]["volumeMounts"]}
    if variant.endswith("repository-volume"):
        assert mounts["/models"]["readOnly"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert claims == ["trocr-models"]
    else:
        assert "/models" not in mounts
