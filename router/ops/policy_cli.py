"""`slm-router policy validate|schema|explain|simulate|apply`: the ops workflow around a policy
file (policies/README.md, "Operating a policy"). router/ops/cli.py mounts `add_subcommands`.

Exit codes: 0 ok; 1 an invalid policy (its issues printed, nothing done), a refused request in
`explain`, or an unreadable traffic file; 2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policies.issues import PolicyIssue, has_errors

if TYPE_CHECKING:
    from router.config import AppConfig

SCHEMA_TITLE = "slm-router policy"


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("validate", help="check policy files: file:line:col, path, suggestion")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the issues as one JSON object")
    p.set_defaults(func=_validate)

    p = sub.add_parser("schema", help="JSON Schema of the policy document, for editors")
    p.add_argument("--out", type=Path, help="write here instead of stdout")
    p.set_defaults(func=_schema)

    p = sub.add_parser("explain", help="classify one prompt and show the plan and why")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("prompt")
    _add_context_args(p)
    p.add_argument("--model", help="the client's `model` (a pin); default: auto")
    p.add_argument("--top", type=int, default=5, help="classifier scores to show")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_explain)

    p = sub.add_parser("simulate", help="replay a JSONL traffic file: routing, accuracy, cost")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--traffic", type=Path, required=True, metavar="FILE.jsonl")
    p.add_argument("--text-field", default="text")
    p.add_argument("--label-field", help="field with the expected domain (or expert: --match)")
    p.add_argument("--match", choices=("domain", "expert"), default="domain")
    p.add_argument("--oos-label", default="out_of_scope", help="label meaning out of scope")
    p.add_argument("--completion-tokens", type=int, default=None, metavar="N")
    p.add_argument(
        "--tokens", choices=("auto", "estimate"), default="auto", help="estimate: chars/4 only"
    )
    _add_context_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, metavar="DIR", help="write report.json and routing.png")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("apply", help="validate, then hot-reload into the running app")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument(
        "--address", help="Ray address (default: $RAY_ADDRESS, else the running gateway's)"
    )
    p.set_defaults(func=_apply)


def _add_context_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--team", help="the API key's team")
    p.add_argument("--user", help="the request's `user` (sticky A/B splits)")
    p.add_argument(
        "--budget-used", type=float, metavar="FRACTION", help="of the team's budget, 0..1"
    )


# --- validate / load -------------------------------------------------------------------------


def artifact_labels(config: AppConfig) -> list[str] | None:
    """In-scope labels of the classifier's trained artifact (metadata only, no model load)."""
    path = config.classifier.path
    if config.classifier.kind == "examples" or path is None:
        return None
    try:
        meta = json.loads((Path(path) / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    labels = meta.get("labels")
    return [str(x) for x in labels] if isinstance(labels, list) else None


def _cross_check(config: AppConfig) -> list[PolicyIssue]:
    """The gateway's cross-checks, plus what only a file on disk can tell: whether the
    artifact exists and whether every route names one of its labels."""
    from policies.checks import check_routing

    issues: list[PolicyIssue] = []
    path = config.classifier.path
    if config.classifier.kind != "examples" and path is not None and not Path(path).is_dir():
        issues.append(
            PolicyIssue(
                f"classifier artifact '{path}' not found (relative to {Path.cwd()}); "
                "explain, simulate and serve need it",
                loc=("classifier", "path"),
                suggestion="build it with `slm-router classifier train ... --out " + path + "`",
                severity="warning",
            )
        )
    issues += check_routing(config.routing, set(config.experts), artifact_labels(config))
    return issues


def validate_path(path: Path) -> tuple[AppConfig | None, list[PolicyIssue]]:
    """(the config, or None on errors; every issue). Never raises for a bad file."""
    from policies.loader import validate_text
    from router.config import AppConfig

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [PolicyIssue(f"cannot read the file: {exc}", file=str(path))]
    result = validate_text(text, AppConfig, file=str(path), cross_check=_cross_check)
    return result.value, list(result.issues)


def _sorted(issues: Sequence[PolicyIssue]) -> list[PolicyIssue]:
    return sorted(issues, key=lambda i: (i.severity != "error", i.line or 0, i.column or 0))


def _print_issues(issues: Sequence[PolicyIssue], stream: Any = None) -> None:
    for issue in _sorted(issues):
        print(issue, file=stream or sys.stdout)


def _validate(args: argparse.Namespace) -> int:
    failed = False
    results: dict[str, list[dict[str, object]]] = {}
    for path in args.files:
        _, issues = validate_path(path)
        failed |= has_errors(issues)
        results[str(path)] = [i.to_dict() for i in _sorted(issues)]
        if args.json:
            continue
        _print_issues(issues)
        errors = sum(i.severity == "error" for i in issues)
        warnings = len(issues) - errors
        if errors:
            print(f"{path}: {errors} error(s), {warnings} warning(s)")
        else:
            print(f"{path}: ok" + (f" ({warnings} warning(s))" if warnings else ""))
    if args.json:
        print(json.dumps({"ok": not failed, "files": results}, indent=2))
    return 1 if failed else 0


def load_or_report(path: Path) -> AppConfig | None:
    """The policy with absolute paths, or None after printing its errors to stderr."""
    from router.config import with_absolute_paths

    config, issues = validate_path(path)
    if config is None:
        _print_issues(issues, sys.stderr)
        return None
    return with_absolute_paths(config, Path.cwd())


# --- schema ----------------------------------------------------------------------------------


def _schema(args: argparse.Namespace) -> int:
    from policies.loader import json_schema
    from router.config import AppConfig

    text = json.dumps(json_schema(AppConfig, title=SCHEMA_TITLE), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


# --- explain ---------------------------------------------------------------------------------


def _explain(args: argparse.Namespace) -> int:
    from policies import decide
    from policies.compiled import CompiledPolicy
    from policies.errors import PolicyError
    from router.ops.simulate import TrafficRow, build_policy_classifier, context_for
    from router.serving.service import scores_of

    config = load_or_report(args.file)
    if config is None:
        return 1
    t0 = time.perf_counter()
    classifier = build_policy_classifier(config)
    t1 = time.perf_counter()
    c = classifier.classify([args.prompt])[0]
    t2 = time.perf_counter()
    row = TrafficRow(args.prompt, team=args.team, user=args.user, model=args.model)
    ctx = context_for(row, 0, None, None, args.budget_used)
    top = sorted(c.scores.items(), key=lambda kv: -kv[1])[: max(args.top, 1)]
    out: dict[str, Any] = {
        "policy": str(args.file),
        "prompt": args.prompt,
        "context": {
            "team": ctx.team,
            "user": ctx.user,
            "model": ctx.pinned_model,
            "budget_used": ctx.budget_used_fraction,
        },
        "classifier": {
            "kind": classifier.info().kind,
            "load_ms": round(1e3 * (t1 - t0), 1),
            "classify_ms": round(1e3 * (t2 - t1), 2),
        },
        "classification": {**c.to_dict(), "top": [[k, round(v, 6)] for k, v in top]},
    }
    try:
        plan = decide(CompiledPolicy.build(config.routing, config.experts), scores_of(c), ctx)
    except PolicyError as exc:
        out["error"] = {
            "status": exc.status_code,
            "type": exc.error_type,
            "code": exc.code,
            "message": exc.message,
        }
        _emit_explain(out, args.json)
        return 1
    out["plan"] = plan.to_dict()
    _emit_explain(out, args.json)
    return 0


def _emit_explain(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(out, indent=2))
        return
    c, clf = out["classification"], out["classifier"]
    esc = "-" if c["escalate"] is None else f"{c['escalate']:.3f}"
    print(
        f"classifier: {clf['kind']} (loaded in {clf['load_ms']:.0f} ms, "
        f"classified in {clf['classify_ms']:.1f} ms)"
    )
    print(
        f"  label {c['label']}  confidence {c['confidence']:.3f}  "
        f"out_of_scope {'yes' if c['out_of_scope'] else 'no'}  escalate {esc}"
    )
    print("  top: " + ", ".join(f"{k} {v:.3f}" for k, v in c["top"]))
    if "error" in out:
        e = out["error"]
        print(f"refused: HTTP {e['status']} {e['code']}: {e['message']}")
        return
    plan = out["plan"]
    print(f"plan: {' -> '.join([plan['expert'], *plan['fallbacks']])}")
    print(
        f"  domain {plan['domain']}{' (out of scope)' if plan['out_of_scope'] else ''}"
        f"  shadow {plan['shadow'] or '-'}  skipped {', '.join(plan['skipped']) or '-'}"
    )
    print(f"reason: {plan['reason']}")
    print(f"rules fired: {', '.join(plan['trace'])}")


# --- simulate --------------------------------------------------------------------------------


def _simulate(args: argparse.Namespace) -> int:
    from router.ops import simulate as sim
    from router.ops.tokens import TokenCounters

    config = load_or_report(args.file)
    if config is None:
        return 1
    try:
        rows = sim.read_traffic(args.traffic, args.text_field, args.label_field)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    completion = args.completion_tokens or sim.DEFAULT_COMPLETION_TOKENS
    counters = TokenCounters(config.experts, args.tokens)
    classifier = sim.build_policy_classifier(config)
    replayed = sim.replay(
        config,
        classifier,
        rows,
        counters=counters,
        completion_tokens=completion,
        team=args.team,
        user=args.user,
        budget_used=args.budget_used,
        progress=not args.no_progress,
    )
    report = sim.simulation_report(
        config,
        replayed,
        match=args.match,
        oos_label=args.oos_label,
        counters=counters,
        completion_tokens=completion,
    )
    report = {"policy": str(args.file), "traffic": str(args.traffic), **report}
    if args.out is not None:
        written = sim.write_outputs(report, args.out)
        print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else sim.format_report(report))
    return 0


# --- apply -----------------------------------------------------------------------------------


def _deployments() -> dict[str, str]:
    from ray import serve

    from router.serving.app import APP_NAME

    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return {}
    return {name: str(d.status) for name, d in app.deployments.items()}


def _connect(address: str | None) -> None:
    import logging
    import os

    import ray

    from router.serving.runtime import apply_airgap_env

    apply_airgap_env()
    if not ray.is_initialized():
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS") or "auto",
            logging_level=logging.WARNING,
        )


def _apply(args: argparse.Namespace) -> int:
    if load_or_report(args.file) is None:
        print(f"{args.file}: not applied; the running policy is unchanged", file=sys.stderr)
        return 1
    from router.serving.gateway_file import EXIT_NO_GATEWAY, NoGateway, resolve_address
    from router.serving.reload import apply_file

    try:  # the running gateway's runtime file, unless --address / RAY_ADDRESS (issue 20)
        address = resolve_address(args.address)
        _connect(address)
    except NoGateway as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_GATEWAY
    except ConnectionError as exc:  # no cluster at the address: say so, not a traceback
        print(
            f"error: cannot reach Ray ({exc}); is the gateway running? (--address)", file=sys.stderr
        )
        return EXIT_NO_GATEWAY
    before = _deployments()
    config, seconds = apply_file(args.file, address)
    after = _deployments()
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    print(
        f"applied {args.file} in {seconds:.1f} s: {len(config.experts)} expert(s), "
        f"{len(config.routing.routes)} route(s), fallback {config.routing.fallback}"
    )
    print(f"deployments: {', '.join(sorted(after)) or '-'}")
    if added or removed:
        print(f"  added: {', '.join(added) or '-'}; removed: {', '.join(removed) or '-'}")
    return 0
