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
