"""The RayService manifest carries the data plane's flags in every pod's env (issue 11.1)."""

from __future__ import annotations

from router.config import default_policy_path, load_policy
from router.ops.rayservice import RayServiceOptions, rayservice
from router.serving.server import serve_config


def _pod_envs(opts: RayServiceOptions) -> list[dict[str, str]]:
    cfg = serve_config(load_policy(default_policy_path()))
    spec = rayservice(cfg, opts)["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [
        {e["name"]: e.get("value", "") for e in g["template"]["spec"]["containers"][0]["env"]}
        for g in groups
    ]


def test_haproxy_flags_on_every_pod_by_default() -> None:
    for env in _pod_envs(RayServiceOptions()):
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"


def test_proxy_plane_sets_no_flags() -> None:
    for env in _pod_envs(RayServiceOptions(data_plane="proxy")):
        assert "RAY_SERVE_ENABLE_HA_PROXY" not in env
