"""The deployment files of export/triton.md parse and say what the recipe promises."""

from __future__ import annotations

from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parents[1] / "export" / "triton"
IMAGE_PREFIX = "nvcr.io/nvidia/tritonserver:"


def test_compose_serves_the_repository_on_one_gpu():
    compose = yaml.safe_load((RECIPES / "docker-compose.yaml").read_text())
    triton = compose["services"]["triton"]
    assert triton["image"].startswith(IMAGE_PREFIX) and triton["image"].endswith("-py3")
    assert triton["command"][0] == "tritonserver" and "--model-repository=/models" in triton["command"]
    assert {"8000:8000", "8001:8001", "8002:8002"} <= set(triton["ports"])
    assert any(v.startswith("./models:/models") for v in triton["volumes"])
    assert any(v.startswith("trt-cache:/trt-cache") for v in triton["volumes"])
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_kubernetes_deployment_service_and_queue_time_autoscaling():
    docs = {d["kind"]: d for d in yaml.safe_load_all((RECIPES / "kubernetes.yaml").read_text())}
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"] == service["spec"]["selector"]
    (container,) = pod["spec"]["containers"]
    compose = yaml.safe_load((RECIPES / "docker-compose.yaml").read_text())
    assert container["image"] == compose["services"]["triton"]["image"]  # one release for both recipes
    assert "--model-repository=/models" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"] == "dfr-models"
    assert "/trt-cache" in mounts
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name in (RECIPES.parent / "triton.md").read_text()  # the adapter rule that serves it is documented
