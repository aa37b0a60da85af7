"""The deployment graph, built from the policy by one function, and the Serve config that runs it.

A policy has two parts as far as Serve is concerned. The graph (the experts that hold weights in
their own deployments, a classifier deployment) decides which deployments exist and how each is
built: it goes in the application's `args`, so Serve's declarative deploy sees a new code version
(and builds new replicas) only when it changes. Everything else (routes, budgets, gateway
settings, in-process experts) is the ingress's `user_config`: Serve hands it to `reconfigure()`
on the live replicas, with no restart (router/serving/ingress.py).
"""

from __future__ import annotations

import json
from typing import Any

from router.config import AppConfig

APP_NAME = "slm-router"


def ingress_user_config(config: AppConfig) -> dict[str, Any]:
    return {"policy": config.model_dump(mode="json")}


def graph(config: AppConfig) -> dict[str, Any]:
    """What the non-ingress deployments are built from; equal graphs deploy equal replicas."""
    clf = config.classifier
    return {
        "experts": {
            name: spec.model_dump(mode="json")
            for name, spec in config.experts.items()
            if spec.runs_in_own_deployment
        },
        "classifier": clf.model_dump(mode="json") if clf.placement == "deployment" else None,
        "examples": config.route_examples() if clf.placement == "deployment" else None,
    }


def build_app(config: AppConfig, redis_url: str | None = None) -> Any:
    """Ingress (FastAPI) -> [classifier deployment] -> one deployment per local expert."""
    gw = config.gateway
    return build_graph(graph(config), redis_url).options(
        num_replicas=gw.replicas,
        max_ongoing_requests=gw.max_ongoing_requests,
        ray_actor_options={"num_cpus": gw.num_cpus},
        user_config=ingress_user_config(config),
    )


def build_graph(shape: dict[str, Any], redis_url: str | None = None) -> Any:
    """The graph alone: the ingress waits for its policy in `user_config` (a serve config's
    `deployments:` entry, or build_app's options)."""
    from classifiers.deployment import ClassifierDeployment
    from classifiers.spec import ClassifierSpec
    from router.serving.ingress import Ingress

    experts = expert_deployments(shape["experts"])
    classifier = None
    if shape.get("classifier"):
        clf = ClassifierSpec.model_validate(shape["classifier"])
        classifier = ClassifierDeployment.options(  # type: ignore[attr-defined]
            name="classifier",
            num_replicas=clf.replicas,
            max_ongoing_requests=max(32, clf.max_batch_size * 4),
            ray_actor_options={"num_cpus": clf.num_cpus},
        ).bind(clf, shape.get("examples") or {}, clf.max_batch_size, clf.batch_wait_ms)
    return _Bound(Ingress, classifier, experts, redis_url)


class _Bound:
    """Ingress options first, bind last: `.options()` then `.bind()` is Serve's order."""

    def __init__(self, ingress: Any, *args: Any) -> None:
        self.ingress, self.args = ingress, args

    def options(self, **opts: Any) -> Any:
        return self.ingress.options(name="ingress", **opts).bind(*self.args)


def expert_deployments(specs: dict[str, Any]) -> dict[str, Any]:
    """Expert name -> bound deployment: one per local model, one per shared LoRA base."""
    from experts.deployment import ExpertDeployment, deployment_options, lora_groups
    from experts.spec import ExpertSpec

    experts = {name: ExpertSpec.model_validate(spec) for name, spec in specs.items()}
    bound: dict[str, Any] = {}
    for first, members in lora_groups(experts).items():
        opts = deployment_options(first, experts[first]) | {"name": f"lora-{first}"}
        app = ExpertDeployment.options(**opts).bind(first, experts[first], members)  # type: ignore[attr-defined]
        bound.update(dict.fromkeys(members, app))
    for name, spec in experts.items():
        if spec.runs_in_own_deployment and name not in bound:
            opts = deployment_options(name, spec)
            bound[name] = ExpertDeployment.options(**opts).bind(name, spec)  # type: ignore[attr-defined]
    return bound


def app_config(
    config: AppConfig,
    *,
    name: str = APP_NAME,
    route_prefix: str = "/",
    redis_url: str | None = None,
    env_vars: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One application of a Serve deploy config (ServeApplicationSchema) running `config`."""
    from experts.deployment import deployment_options, lora_groups

    deployments: list[dict[str, Any]] = []
    grouped = {m: first for first, ms in lora_groups(config.experts).items() for m in ms}
    for expert, spec in config.experts.items():
        if not spec.runs_in_own_deployment or grouped.get(expert, expert) != expert:
            continue
        opts = deployment_options(expert, spec)
        if expert in grouped:
            opts["name"] = f"lora-{expert}"
        deployments.append(opts)
    gw = config.gateway
    deployments.append(
        {
            "name": "ingress",
            "num_replicas": gw.replicas,
            "max_ongoing_requests": gw.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": gw.num_cpus},
            "user_config": ingress_user_config(config),
        }
    )
    args = {"graph_json": json.dumps(graph(config))}  # expert order picks LoRA group names
    if redis_url:
        args["redis_url"] = redis_url
    app: dict[str, Any] = {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": "router.serving.app:app_builder",
        "args": args,
    }
    if env_vars is not None:
        app["runtime_env"] = {"env_vars": env_vars}
    return app | {"deployments": deployments}


def app_builder(args: dict[str, str]) -> Any:
    """Entry point for `serve deploy` / `serve run router.serving.app:app_builder policy=FILE`.

    `graph_json` (what `slm-router serve-config` writes) builds the graph only; the policy
    comes in the ingress's user_config. `policy` / `policy_json` build the whole app."""
    from router.config import AppConfig, default_policy_path, load_policy

    if args.get("graph_json"):
        return build_graph(json.loads(args["graph_json"]), args.get("redis_url")).options()
    if args.get("policy_json"):
        return build_app(AppConfig.model_validate_json(args["policy_json"]))
    return build_app(load_policy(args.get("policy") or default_policy_path()))
