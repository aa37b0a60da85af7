"""`serve-config --format rayservice`: a KubeRay RayService whose serveConfigV2 is the same
config Serve's own schema accepts, and whose fields exist in KubeRay's RayService CRD."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from router.config import PACKAGE_DEFAULT, load_policy
from router.ops.cli import main
from router.ops.rayservice import rayservice, resource_needs
from router.serving.runtime import AIRGAP_ENV
from router.serving.server import serve_config

# Field paths in ray-project/kuberay ray-operator/config/crd/bases/ray.io_rayservices.yaml
# (v1, commit feeaf72f, Aug 2026); `[]` is a list item. Vendored as the few paths we emit, not the
# whole 1 MB CRD. Maps with free keys (metadata, rayStartParams, requests/limits) are not walked.
_C = "template.spec.containers[]"
_ENV = f"{_C}.env[]"
_GROUP = [
    "rayStartParams",
    "template",
    "template.spec",
    "template.spec.containers",
    f"{_C}.name",
    f"{_C}.image",
    f"{_C}.env",
    f"{_ENV}.name",
    f"{_ENV}.value",
    f"{_ENV}.valueFrom",
    f"{_ENV}.valueFrom.secretKeyRef",
    f"{_ENV}.valueFrom.secretKeyRef.name",
    f"{_ENV}.valueFrom.secretKeyRef.key",
    f"{_C}.resources",
    f"{_C}.resources.requests",
    f"{_C}.resources.limits",
    f"{_C}.ports",
    f"{_C}.ports[].containerPort",
    f"{_C}.ports[].name",
]
_RC = "spec.rayClusterConfig"
CRD_PATHS = {
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "spec.serveConfigV2",
    _RC,
    f"{_RC}.rayVersion",
    f"{_RC}.enableInTreeAutoscaling",
    f"{_RC}.authOptions",
    f"{_RC}.authOptions.mode",
    f"{_RC}.authOptions.secretName",
    f"{_RC}.headGroupSpec",
    f"{_RC}.workerGroupSpecs",
    *(f"{_RC}.headGroupSpec.{p}" for p in _GROUP),
    *(f"{_RC}.workerGroupSpecs[].{p}" for p in _GROUP),
    *(f"{_RC}.workerGroupSpecs[].{p}" for p in ("groupName", "replicas", "minReplicas")),
    f"{_RC}.workerGroupSpecs[].maxReplicas",
}
_FREE_MAPS = ("metadata", "rayStartParams", "requests", "limits")


def _paths(obj: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            if key not in _FREE_MAPS:
                out |= _paths(value, path)
    elif isinstance(obj, list):
        for item in obj:
            out |= _paths(item, prefix + "[]")
    return out


def _cli_manifest(capsys: Any, *extra: str) -> dict[str, Any]:
    argv = ["serve-config", "--policy", str(PACKAGE_DEFAULT), "--format", "rayservice", *extra]
    assert main(argv) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(doc, dict)
    return doc


def test_manifest_parses_and_serve_config_v2_passes_serves_schema(capsys: Any) -> None:
    from ray.serve.schema import ServeDeploySchema

    doc = _cli_manifest(capsys, "--image", "registry.local/slm-router:1", "--name", "router")
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == (
        "ray.io/v1",
        "RayService",
        "router",
    )
    inner = doc["spec"]["serveConfigV2"]
    assert isinstance(inner, str)  # the CRD types it as a string, not an object
    schema = ServeDeploySchema.model_validate(yaml.safe_load(inner))
    assert schema.applications[0].import_path == "router.serving.app:app_builder"
    assert yaml.safe_load(inner) == serve_config(load_policy(PACKAGE_DEFAULT))
    images = {
        c["image"]
        for g in [doc["spec"]["rayClusterConfig"]["headGroupSpec"]]
        + doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        for c in g["template"]["spec"]["containers"]
    }
    assert images == {"registry.local/slm-router:1"}


def test_every_emitted_field_exists_in_the_rayservice_crd(capsys: Any) -> None:
    unknown = _paths(_cli_manifest(capsys)) - CRD_PATHS
    assert not unknown, f"not in KubeRay's RayService CRD: {sorted(unknown)}"


def test_the_path_check_catches_a_misspelt_field() -> None:
    doc = rayservice(serve_config(load_policy(PACKAGE_DEFAULT)))
    doc["spec"]["rayClusterConfig"]["workerGroupSpec"] = []
    assert _paths(doc) - CRD_PATHS == {f"{_RC}.workerGroupSpec"}


def _env(group: dict[str, Any]) -> dict[str, Any]:
    container = group["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_pods_get_airgap_env_redis_from_a_secret_and_token_auth() -> None:
    doc = rayservice(serve_config(load_policy(PACKAGE_DEFAULT)))
    rc = doc["spec"]["rayClusterConfig"]
    assert rc["authOptions"] == {"mode": "token", "secretName": "slm-router-ray-token"}
    for group in [rc["headGroupSpec"], *rc["workerGroupSpecs"]]:
        env = _env(group)
        assert {k: env[k] for k in AIRGAP_ENV} == AIRGAP_ENV
        assert env["RAY_AUTH_MODE"] == "token"
        # RAY_AUTH_TOKEN is the variable Ray 2.60 reads; auth_token is KubeRay's secret key.
        token = {"name": "slm-router-ray-token", "key": "auth_token"}
        assert env["RAY_AUTH_TOKEN"] == {"secretKeyRef": token}
        assert env["REDIS_URL"] == {"secretKeyRef": {"name": "slm-router-redis", "key": "url"}}
    assert rc["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_cpu_only_policy_has_one_cpu_group_sized_from_the_experts() -> None:
    cfg = serve_config(load_policy(PACKAGE_DEFAULT))
    cpu, gpu = resource_needs(cfg)
    # default policy: smollm2 0.5 x 2 max, generalist 0.5, minilm 0.25, ingress (the config
    # states gateway.num_cpus, 0 by default, as build_app does)
    assert (cpu.cpus, gpu.gpus) == (0.5 * 2 + 0.5 + 0.25 + 0, 0)
    groups = rayservice(cfg)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu-workers"]
    assert "nvidia.com/gpu" not in groups[0]["template"]["spec"]["containers"][0]["resources"]


def test_an_expert_asking_for_gpus_gets_a_gpu_worker_group() -> None:
    cfg = copy.deepcopy(serve_config(load_policy(PACKAGE_DEFAULT)))
    dep = next(d for d in cfg["applications"][0]["deployments"] if d["name"] == "expert-smollm2")
    dep["ray_actor_options"]["num_gpus"] = 1
    groups = rayservice(cfg)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    gpu = next(g for g in groups if g["groupName"] == "gpu-workers")
    res = gpu["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["maxReplicas"] == 2  # smollm2 scales to 2 replicas of 1 GPU each
    # custom resource naming the group, so a policy can pin an expert there
    assert gpu["rayStartParams"]["resources"] == '"{\\"gpu_node\\": 1}"'
