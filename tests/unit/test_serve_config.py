"""`slm-router serve-config` prints a file that Ray Serve's own deploy schema accepts."""

from __future__ import annotations

import yaml

from router.config import PACKAGE_DEFAULT, load_policy
from router.ops.cli import main
from router.serving.app import app_builder
from router.serving.server import serve_config_yaml


def test_serve_config_validates_against_serve_schema(capsys) -> None:  # type: ignore[no-untyped-def]
    from ray.serve.schema import ServeDeploySchema

    assert main(["serve-config", "--policy", str(PACKAGE_DEFAULT)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    schema = ServeDeploySchema.model_validate(doc)
    app = schema.applications[0]
    assert app.import_path == "router.serving.app:app_builder"
    names = {d["name"] for d in doc["applications"][0]["deployments"]}
    assert names == {"ingress", "expert-smollm2", "expert-generalist", "expert-minilm"}


def test_expert_scaling_and_resources_come_from_the_policy() -> None:
    doc = yaml.safe_load(serve_config_yaml(load_policy(PACKAGE_DEFAULT)))
    expert = next(d for d in doc["applications"][0]["deployments"] if d["name"] == "expert-smollm2")
    spec = load_policy(PACKAGE_DEFAULT).experts["smollm2"]
    assert expert["autoscaling_config"]["min_replicas"] == spec.replicas.min
    assert expert["autoscaling_config"]["max_replicas"] == spec.replicas.max
    assert expert["ray_actor_options"]["num_cpus"] == spec.resources.num_cpus
    assert expert["max_ongoing_requests"] == spec.max_ongoing_requests


def test_app_builder_rebuilds_the_same_graph_from_embedded_policy() -> None:
    doc = yaml.safe_load(serve_config_yaml(load_policy(PACKAGE_DEFAULT)))
    app = app_builder(doc["applications"][0]["args"])
    assert type(app).__name__ == "Application"


def test_policy_is_the_ingress_user_config_and_the_graph_is_the_args() -> None:
    """A route-only change keeps the app's args (Serve's code version), so `serve deploy` of the
    new file reconfigures the live ingress; a changed local expert changes the args."""
    policy = load_policy(PACKAGE_DEFAULT)
    doc = yaml.safe_load(serve_config_yaml(policy))
    app = doc["applications"][0]
    ingress = next(d for d in app["deployments"] if d["name"] == "ingress")
    assert load_policy_json(ingress["user_config"]["policy"]) == policy
    assert "policy_json" not in app["args"]
    routes = policy.routing.model_copy(update={"fallback": "smollm2"})
    moved = policy.model_copy(update={"routing": routes})
    assert moved != policy
    assert yaml.safe_load(serve_config_yaml(moved))["applications"][0]["args"] == app["args"]
    bigger = policy.experts["smollm2"].model_copy(update={"max_tokens_default": 7})
    grown = policy.model_copy(update={"experts": {**policy.experts, "smollm2": bigger}})
    assert yaml.safe_load(serve_config_yaml(grown))["applications"][0]["args"] != app["args"]


def load_policy_json(data: object) -> object:
    from router.config import AppConfig

    return AppConfig.model_validate(data)
