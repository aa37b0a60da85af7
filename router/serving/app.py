"""The deployment graph, built from the policy by one function."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from router.config import AppConfig

APP_NAME = "slm-router"


def build_app(config: AppConfig, redis_url: str | None = None) -> Any:
    """Ingress (FastAPI) -> [classifier deployment] -> one deployment per local expert."""
    from classifiers.deployment import ClassifierDeployment
    from router.serving.ingress import Ingress

    experts = expert_deployments(config)
    clf = config.classifier
    classifier = None
    if clf.placement == "deployment":
        classifier = ClassifierDeployment.options(  # type: ignore[attr-defined]
            name="classifier",
            num_replicas=clf.replicas,
            max_ongoing_requests=max(32, clf.max_batch_size * 4),
            ray_actor_options={"num_cpus": clf.num_cpus},
        ).bind(clf, config.route_examples(), clf.max_batch_size, clf.batch_wait_ms)
    gw = config.gateway
    return Ingress.options(  # type: ignore[attr-defined]
        name="ingress",
        num_replicas=gw.replicas,
        max_ongoing_requests=gw.max_ongoing_requests,
        ray_actor_options={"num_cpus": gw.num_cpus},
    ).bind(config, classifier, experts, redis_url)


def expert_deployments(config: AppConfig) -> dict[str, Any]:
    """Expert name -> bound deployment: one per local model, one per shared LoRA base."""
    from experts.deployment import ExpertDeployment, deployment_options, lora_groups

    bound: dict[str, Any] = {}
    for first, members in lora_groups(config.experts).items():
        spec = config.experts[first]
        opts = deployment_options(first, spec) | {"name": f"lora-{first}"}
        opts["version"] = content_version(first, spec, members)
        app = ExpertDeployment.options(**opts, _internal=True).bind(first, spec, members)  # type: ignore[attr-defined]
        bound.update(dict.fromkeys(members, app))
    for name, spec in config.experts.items():
        if spec.runs_in_own_deployment and name not in bound:
            opts = deployment_options(name, spec) | {"version": content_version(name, spec)}
            bound[name] = ExpertDeployment.options(**opts, _internal=True).bind(name, spec)  # type: ignore[attr-defined]
    return bound


def content_version(name: str, spec: Any, adapters: dict[str, str] | None = None) -> str:
    """A deployment version from what its replicas are built from.

    `serve.run` gives a deployment without a version a random one, so every policy apply would
    restart every model replica. With this, an apply restarts an expert only when its spec (or
    adapters, or our code's version) changed; scaling options are updated in place by Serve."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("slm-router")
    except PackageNotFoundError:
        ours = "dev"
    payload = json.dumps([ours, name, spec.model_dump(mode="json"), adapters or {}], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def app_builder(args: dict[str, str]) -> Any:
    """Entry point for `serve deploy` / `serve run router.serving.app:app_builder policy=FILE`."""
    from router.config import AppConfig, default_policy_path, load_policy

    if args.get("policy_json"):
        return build_app(AppConfig.model_validate_json(args["policy_json"]))
    return build_app(load_policy(args.get("policy") or default_policy_path()))
