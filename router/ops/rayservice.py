"""A KubeRay RayService manifest around the same Serve config `serve-config` prints.

Pure: it reads only the serve config dict, so it can be checked without a cluster. The worker
groups are sized from the deployments' own ray_actor_options (replicas x per-replica resources),
GPU experts get their own GPU group, and the head runs no replicas (num-cpus 0) so a busy expert
cannot starve the GCS or the controller."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

# The key KubeRay itself reads from the auth secret (ray-operator utils.RAY_AUTH_TOKEN_SECRET_KEY).
AUTH_TOKEN_KEY = "auth_token"
REDIS_URL_KEY = "url"
SERVE_PORT = 8000


@dataclass(frozen=True)
class RayServiceOptions:
    name: str = "slm-router"
    image: str = "slm-router:latest"
    ray_version: str = "2.60.0"
    redis_secret: str = "slm-router-redis"
    auth_secret: str = "slm-router-ray-token"
    head_cpus: int = 2
    head_memory: str = "8Gi"
    worker_cpus: int = 4
    worker_memory: str = "16Gi"
    # Serve's HAProxy mode on every node, as `slm-router serve` runs (router/serving/dataplane.py);
    # "proxy" leaves Serve's proxy actor. Serve reads the flags when its processes start, so they
    # go in the pods' env, not the app's runtime_env. Ray's 30 s ingress drain stays: a cloud load
    # balancer in front of the pods needs it to deregister a stopping replica.
    data_plane: str = "haproxy"


@dataclass(frozen=True)
class _Need:
    cpus: float = 0.0
    gpus: float = 0.0
    replicas: int = 0


def _max_replicas(dep: dict[str, Any]) -> int:
    auto = dep.get("autoscaling_config")
    return int(auto["max_replicas"]) if auto else int(dep.get("num_replicas", 1))


def resource_needs(serve_cfg: dict[str, Any]) -> tuple[_Need, _Need]:
    """(CPU-only, GPU) totals at every deployment's max replicas. Serve's default is 1 CPU."""
    cpu, gpu = _Need(), _Need()
    for app in serve_cfg["applications"]:
        for dep in app["deployments"]:
            actor = dep.get("ray_actor_options") or {}
            n = _max_replicas(dep)
            cpus, gpus = float(actor.get("num_cpus", 1)) * n, float(actor.get("num_gpus", 0)) * n
            if gpus:
                gpu = _Need(gpu.cpus + cpus, gpu.gpus + gpus, gpu.replicas + n)
            else:
                cpu = _Need(cpu.cpus + cpus, 0.0, cpu.replicas + n)
    return cpu, gpu


def _env(opts: RayServiceOptions, serve_cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The app's air-gap env on every pod (the serve config carries it too, but Ray's own
    processes on the pod read it before any runtime_env), REDIS_URL and the Ray token from
    secrets, never inline."""
    env_vars: dict[str, str] = {}
    for app in serve_cfg["applications"]:
        env_vars.update((app.get("runtime_env") or {}).get("env_vars") or {})
    if opts.data_plane == "haproxy":
        env_vars.update(RAY_SERVE_ENABLE_DIRECT_INGRESS="1", RAY_SERVE_ENABLE_HA_PROXY="1")
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env_vars.items()]
    secret = {"secretKeyRef": {"name": opts.redis_secret, "key": REDIS_URL_KEY}}
    env.append({"name": "REDIS_URL", "valueFrom": secret})
    env.append({"name": "RAY_AUTH_MODE", "value": "token"})
    token = {"secretKeyRef": {"name": opts.auth_secret, "key": AUTH_TOKEN_KEY}}
    env.append({"name": "RAY_AUTH_TOKEN", "valueFrom": token})
    return env


def _pod(opts: RayServiceOptions, env: list[dict[str, Any]], res: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "ray",
        "image": opts.image,
        "env": env,
        "resources": {"requests": res, "limits": res},
    }
    return {"spec": {"containers": [container]}}


def _worker(
    opts: RayServiceOptions, env: list[dict[str, Any]], name: str, need: _Need, gpus: int
) -> dict[str, Any]:
    per_pod_cpus = max(opts.worker_cpus, math.ceil(need.cpus / max(need.replicas, 1)))
    pods = max(1, math.ceil(need.cpus / per_pod_cpus))
    res: dict[str, Any] = {"cpu": str(per_pod_cpus), "memory": opts.worker_memory}
    # A custom resource names the group, so a policy can pin an expert to it
    # (ray_actor_options.resources); the GPU count itself comes from the pod's nvidia.com/gpu.
    node = name.replace("-workers", "_node")
    params = {"resources": f'"{{\\"{node}\\": 1}}"'}
    if gpus:
        res["nvidia.com/gpu"] = str(gpus)
        pods = max(1, math.ceil(need.gpus / gpus))
    return {
        "groupName": name,
        "replicas": 1,
        "minReplicas": 1,
        "maxReplicas": pods,
        "rayStartParams": params,
        "template": _pod(opts, env, res),
    }


def rayservice(serve_cfg: dict[str, Any], opts: RayServiceOptions | None = None) -> dict[str, Any]:
    """The RayService object (apiVersion ray.io/v1) for `kubectl apply -f`."""
    opts = opts or RayServiceOptions()
    env = _env(opts, serve_cfg)
    cpu_need, gpu_need = resource_needs(serve_cfg)
    workers = [_worker(opts, env, "cpu-workers", cpu_need, 0)]
    if gpu_need.gpus:
        per_pod = max(1, math.ceil(gpu_need.gpus / max(gpu_need.replicas, 1)))
        workers.append(_worker(opts, env, "gpu-workers", gpu_need, per_pod))
    head_res = {"cpu": str(opts.head_cpus), "memory": opts.head_memory}
    head = {
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": _pod(opts, env, head_res),
    }
    head["template"]["spec"]["containers"][0]["ports"] = [
        {"containerPort": 6379, "name": "gcs"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": SERVE_PORT, "name": "serve"},
    ]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": opts.name},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_cfg, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": opts.ray_version,
                "enableInTreeAutoscaling": True,
                # KubeRay >= 1.5 also injects RAY_AUTH_MODE/RAY_AUTH_TOKEN from this secret; the
                # explicit env above keeps older operators working the same.
                "authOptions": {"mode": "token", "secretName": opts.auth_secret},
                "headGroupSpec": head,
                "workerGroupSpecs": workers,
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as `|` blocks, as KubeRay's own samples write them;
    no &anchors, which some manifest tools mangle."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def rayservice_yaml(serve_cfg: dict[str, Any], opts: RayServiceOptions | None = None) -> str:
    return yaml.dump(rayservice(serve_cfg, opts), Dumper=_Dumper, sort_keys=False)
