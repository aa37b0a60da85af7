"""`slm-router classifier train|predict|eval`; the lead mounts add_subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from classifiers.artifact import KINDS
from classifiers.train import DEFAULT_KIND


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    train = subparsers.add_parser("train", help="Train a classifier artifact from JSONL.")
    train.add_argument("--data", required=True, type=Path, help="Training JSONL.")
    train.add_argument("--val", type=Path, help="Validation JSONL (default: 10%% seeded holdout).")
    train.add_argument("--label-field", help="Field holding the label (task 'labels').")
    train.add_argument("--text-field", default="text")
    train.add_argument(
        "--fine-label-field",
        help="Train on this finer label (e.g. intent) and sum its probabilities into "
        "--label-field's labels (e.g. domain); each fine label must belong to one label.",
    )
    train.add_argument("--oos-label", help="Label value meaning out of scope.")
    train.add_argument(
        "--group-field",
        help="Escalation: calibrate per group (e.g. subject): a second model learns the group "
        "from the text and the score blends in that group's observed outcomes.",
    )
    train.add_argument(
        "--kind",
        choices=KINDS,
        help="Default by measurement (docs/bench/classifiers.md): "
        + ", ".join(f"{k} for task {t}" for t, k in DEFAULT_KIND.items()),
    )
    train.add_argument("--task", default="labels", choices=("labels", "escalation"))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--params", default="{}", help="JSON object of kind hyper-parameters.")
    train.add_argument("--out", required=True, type=Path, help="Artifact directory to write.")
    train.set_defaults(func=_train)

    predict = subparsers.add_parser("predict", help="Classify each line of a JSONL file.")
    predict.add_argument("--model", required=True, type=Path)
    predict.add_argument("--data", required=True, type=Path)
    predict.add_argument("--out", required=True, type=Path)
    predict.add_argument("--text-field", help="Default: the artifact's text field.")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.set_defaults(func=_predict)

    ev = subparsers.add_parser("eval", help="Quality, latency and throughput on labelled JSONL.")
    ev.add_argument("--model", required=True, type=Path)
    ev.add_argument("--data", required=True, type=Path)
    ev.add_argument("--label-field", help="Required for label models.")
    ev.add_argument("--oos-label")
    ev.add_argument("--text-field", help="Default: the artifact's text field.")
    ev.add_argument("--latency-queries", type=int, default=200)
    ev.add_argument("--json", action="store_true", help="Print one JSON object.")
    ev.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    from classifiers.train import train_artifact

    if args.task == "labels" and not args.label_field:
        print("error: --label-field is required for --task labels", file=sys.stderr)
        return 2
    params = json.loads(args.params)
    if not isinstance(params, dict):
        print("error: --params must be a JSON object", file=sys.stderr)
        return 2
    meta = train_artifact(
        args.data,
        args.out,
        label_field=args.label_field,
        val=args.val,
        text_field=args.text_field,
        oos_label=args.oos_label,
        kind=args.kind or DEFAULT_KIND[args.task],
        task=args.task,
        seed=args.seed,
        params=params,
        progress=True,
        fine_label_field=args.fine_label_field,
        group_field=args.group_field,
    )
    print(
        json.dumps({"out": str(args.out), "version": meta.version, "validation": meta.validation})
    )
    return 0


def predict_rows(
    model: Path, data: Path, out: Path, text_field: str | None, batch_size: int = 64
) -> int:
    from classifiers.artifact import load_artifact
    from classifiers.evaluate import output_label
    from classifiers.text import read_jsonl, write_jsonl

    clf = load_artifact(model)
    field = text_field or clf.meta.text_field
    texts = [str(r.get(field, "")) for r in read_jsonl(data)]
    oos_out = output_label(clf)
    rows: list[dict[str, Any]] = []
    for s in range(0, len(texts), batch_size):
        for c in clf.classify(texts[s : s + batch_size]):
            rows.append(
                {
                    "label": oos_out if c.out_of_scope else c.label,
                    "confidence": c.confidence,
                    "out_of_scope": c.out_of_scope,
                    "escalate": c.escalate,
                }
            )
    write_jsonl(out, rows)
    return len(rows)


def _predict(args: argparse.Namespace) -> int:
    n = predict_rows(args.model, args.data, args.out, args.text_field, args.batch_size)
    print(f"wrote {n} predictions to {args.out}", file=sys.stderr)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from classifiers.artifact import load_artifact
    from classifiers.evaluate import evaluate
    from classifiers.text import read_jsonl

    clf = load_artifact(args.model)
    if clf.meta.task == "labels" and not args.label_field:
        print("error: --label-field is required for label models", file=sys.stderr)
        return 2
    report = evaluate(
        clf,
        read_jsonl(args.data),
        label_field=args.label_field,
        oos_label=args.oos_label or clf.meta.oos_label,
        text_field=args.text_field or clf.meta.text_field,
        latency_queries=args.latency_queries,
    )
    report = {
        "model": str(args.model),
        "kind": clf.meta.kind,
        "version": clf.meta.version,
        "threshold": clf.oos_threshold,
        **report,
    }
    report = {"headline": headline(report, clf.meta.task), **report}
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0


def headline(report: dict[str, Any], task: str) -> str:
    """The figures issue 12 judges by, at the artifact's own operating point."""
    if task == "escalation":
        return (
            f"APGR {report['apgr']:.3f}, cost saved at 95% of strong quality "
            f"{100 * report['cost_saved_at_95']:.1f}% (n={report['n']})"
        )
    acc, rec = report.get("in_scope_accuracy"), report.get("oos_recall")
    parts = [] if acc is None else [f"in-scope accuracy {100 * acc:.2f}%"]
    if rec is not None:
        parts.append(f"OOS recall {100 * rec:.1f}%")
    return ", ".join(parts) + f" at threshold {report['threshold']:.4f} (n={report['n']})"


def format_report(report: dict[str, Any]) -> str:
    lines = []
    for key, value in report.items():
        if key == "top_confusions":
            lines.append("top_confusions:")
            lines.extend(f"  {g} -> {p}: {c}" for g, p, c in value)
        elif isinstance(value, float):
            lines.append(f"{key}: {value:.4f}")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m classifiers.cli train ...`) until the lead mounts it."""
    parser = argparse.ArgumentParser(prog="slm-router classifier")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
