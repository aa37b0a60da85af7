"""`slm-router`: serve the gateway and the tools ops use around it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from router.config import default_policy_path, load_policy
from router.errors import PolicyLoadError


def _serve(args: argparse.Namespace) -> int:
    from router.serving.runtime import apply_airgap_env

    apply_airgap_env()
    if args.data_plane:  # read by start_gateway before Ray starts (router/serving/dataplane.py)
        os.environ["SLM_ROUTER_DATA_PLANE"] = args.data_plane
    if args.name:  # read by router/serving/gateway_file.py (issue 20)
        os.environ["SLM_ROUTER_GATEWAY"] = args.name
    config = load_policy(args.policy)
    from router.serving.server import run_gateway

    watch = args.policy if args.watch else None
    return run_gateway(config, args.host, args.port, watch=watch)  # signals: serving/signals.py


def _serve_config(args: argparse.Namespace) -> int:
    from router.serving.server import serve_config, serve_config_yaml

    config = load_policy(args.policy)
    if args.format == "rayservice":  # KubeRay: the same config as serveConfigV2 (docs/DEPLOY.md)
        from router.ops.rayservice import RayServiceOptions, rayservice_yaml

        opts = RayServiceOptions(name=args.name, image=args.image)
        print(rayservice_yaml(serve_config(config, args.host, args.port), opts), end="")
        return 0
    print(serve_config_yaml(config, host=args.host, port=args.port), end="")
    return 0


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the gateway (local Ray, or RAY_ADDRESS to join)")
    p.add_argument("--policy", type=Path, default=default_policy_path())
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--watch", action="store_true", help="apply the policy file when it changes")
    p.add_argument(
        "--name",
        help="gateway name for its runtime file, which ops commands find it by "
        "(env SLM_ROUTER_GATEWAY; default 'default'; docs/OPERATIONS.md)",
    )
    p.add_argument(
        "--data-plane",
        choices=("haproxy", "proxy"),
        help="HTTP from --port to the ingress: haproxy (default) or Serve's proxy actor "
        "(env SLM_ROUTER_DATA_PLANE; docs/ARCHITECTURE.md)",
    )
    p.set_defaults(func=_serve)
    p = sub.add_parser("serve-config", help="print a Ray Serve config for `serve deploy`")
    p.add_argument("--policy", type=Path, default=default_policy_path())
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--format", choices=("serve", "rayservice"), default="serve")
    p.add_argument("--image", default="slm-router:latest", help="rayservice: the pods' image")
    p.add_argument("--name", default="slm-router", help="rayservice: metadata.name")
    p.set_defaults(func=_serve_config)


def _mount(sub: Any, name: str, help_text: str, add: Callable[[Any], None]) -> None:
    p = sub.add_parser(name, help=help_text)
    add(p.add_subparsers(dest=f"{name}_command", required=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slm-router", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    from classifiers.cli import add_subcommands as add_classifier
    from classifiers.retrain import add_retrain_subcommand
    from experts.cli import add_subcommands as add_experts
    from router.ops.admin_cli import add_key_subcommands, add_spend_subcommands
    from router.ops.feedback_cli import add_feedback_subcommands
    from router.ops.policy_cli import add_subcommands as add_policy
    from router.ops.rollout_cli import add_rollout_subcommands

    def add_classifier_all(classifier_sub: Any) -> None:
        add_classifier(classifier_sub)
        add_retrain_subcommand(classifier_sub)

    _mount(sub, "classifier", "train, evaluate, retrain routing classifiers", add_classifier_all)
    _mount(sub, "classifier-rollout", "shadow, canary, promote, rollback", add_rollout_subcommands)
    _mount(sub, "feedback", "export feedback as training rows", add_feedback_subcommands)
    _mount(sub, "experts", "tune LoRA adapters, upcycle MoE generalists", add_experts)
    _mount(sub, "policy", "validate, explain, simulate and apply routing policies", add_policy)

    _mount(sub, "keys", "API keys, teams and budgets", add_key_subcommands)
    _mount(sub, "spend", "spend reports from the ledger", add_spend_subcommands)
    from loadtest.cli import add_arguments, run

    p = sub.add_parser("loadtest", help="load-test a running gateway over HTTP")
    add_arguments(p)
    p.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except PolicyLoadError as exc:
        print("\n".join(exc.issues), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _json_default(o: Any) -> Any:
    return str(o)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


if __name__ == "__main__":
    sys.exit(main())
