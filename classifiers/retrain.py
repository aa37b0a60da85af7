"""Retraining from feedback: a candidate artifact, compared with the live one on the same slices.

    slm-router classifier retrain --base-data train.jsonl --feedback feedback.jsonl \
        --current artifacts/clinc150-domain --out artifacts/candidate [--eval val.jsonl]

1. Rows: the base data (label in --label-field) plus feedback rows (`slm-router feedback
   export`: label in `domain`, the classifier's label space), each feedback row repeated
   --feedback-weight times. Rows without text or label are skipped.
2. Held-out slices, never trained on: `base` (the --eval file, else a seeded --holdout share of
   the base data) and `feedback` (a seeded --feedback-holdout share of the feedback rows).
   If the live artifact was trained on base rows that land in `base`, its score there is
   optimistic: the comparison leans towards the live model, the safe direction.
3. The candidate is trained with the existing API (classifiers.train.train_datasets: same kind
   and parameters as the live artifact unless given; OOS threshold calibrated on --calibration,
   else a seeded 10% of its own training rows), then both are scored on each slice.
4. Verdict, per slice and per checked --metric (macro-F1 and OOS recall by default: a model
   that routes in-scope prompts better but lets out-of-scope ones through is not better):
   `worse` when the candidate trails by more than --tolerance AND an exact paired sign test
   (McNemar) on the rows the metric is about (OOS recall: the OOS rows) gives p < --alpha with
   the live model right more often; `better` symmetrically; else `same` (a difference the
   slice cannot tell from noise). Overall: `worse` if any check is; `better` if none is worse
   and one is better. --alpha 1 counts any drop. (The sign test is on per-row correctness,
   a close proxy for macro-F1, which has no paired test of its own.)
5. OUT gets the candidate artifact plus comparison.json and comparison.md. A `worse` candidate
   is marked `promotable: false` (exit code 3) unless --force; `slm-router classifier-rollout
   canary|promote` read that flag and refuse a non-promotable candidate.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from classifiers.base import Classifier
from classifiers.text import sha256_json

FEEDBACK_LABEL = "domain"
METRICS = ("macro_f1", "accuracy", "in_scope_accuracy", "oos_recall")
REPORT_JSON = "comparison.json"
REPORT_MD = "comparison.md"
EXIT_REFUSED = 3
Verdict = Literal["better", "same", "worse"]


@dataclass(frozen=True)
class RetrainSettings:
    kind: str = "tfidf"
    label_field: str = "domain"
    text_field: str = "text"
    oos_label: str | None = None
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    holdout: float = 0.1
    feedback_holdout: float = 0.3
    feedback_weight: int = 1
    metrics: tuple[str, ...] = ("macro_f1", "oos_recall")
    tolerance: float = 0.0
    alpha: float = 0.05
    force: bool = False


@dataclass(frozen=True)
class Row:
    text: str
    label: str


@dataclass
class RetrainResult:
    candidate: Any  # TrainedClassifier
    report: dict[str, Any]

    @property
    def promotable(self) -> bool:
        return bool(self.report["promotable"])


def to_rows(raw: Sequence[Mapping[str, Any]], label_field: str, text_field: str) -> list[Row]:
    out = []
    for r in raw:
        text, label = r.get(text_field), r.get(label_field)
        if isinstance(text, str) and text.strip() and label not in (None, ""):
            out.append(Row(text, str(label)))
    return out


def split(rows: Sequence[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(kept, held out): a seeded shuffle, so the same inputs give the same slices."""
    if not rows or fraction <= 0:
        return list(rows), []
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    return [rows[i] for i in order[cut:]], [rows[i] for i in order[:cut]]


def _as_dicts(rows: Sequence[Row], s: RetrainSettings) -> list[dict[str, str]]:
    return [{s.text_field: r.text, s.label_field: r.label} for r in rows]


def score(clf: Classifier, rows: Sequence[Row], s: RetrainSettings) -> dict[str, Any]:
    """Quality on one slice (one classify pass), plus per-row correctness for paired tests."""
    from classifiers.evaluate import output_label
    from classifiers.metrics import label_metrics

    oos_out = output_label(clf, s.oos_label)
    preds = []
    for start in range(0, len(rows), 256):
        preds.extend(clf.classify([r.text for r in rows[start : start + 256]]))
    gold = [oos_out if r.label == s.oos_label else r.label for r in rows]
    pred = [oos_out if p.out_of_scope else p.label for p in preds]
    has_oos = s.oos_label is not None or oos_out in gold
    report: dict[str, Any] = label_metrics(gold, pred, oos_out if has_oos else None, 5).to_dict()
    right = [a == b for a, b in zip(pred, gold, strict=True)]
    report["accuracy"] = float(np.mean(right)) if right else None
    report["_right"] = right
    report["_oos"] = [g == oos_out and has_oos for g in gold]
    return report


def _slice_id(rows: Sequence[Row]) -> str:
    return sha256_json([[r.text, r.label] for r in rows])[:12]


def sign_test_p(b: int, c: int) -> float:
    """Exact two-sided McNemar (binomial) p-value for b vs c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _rows_for(metric: str, oos: Sequence[bool]) -> list[bool]:
    """Which rows a metric is about: OOS recall the OOS rows, in-scope accuracy the others."""
    if metric == "oos_recall":
        return list(oos)
    if metric == "in_scope_accuracy":
        return [not o for o in oos]
    return [True] * len(oos)


def check(
    metric: str, cur: Mapping[str, Any], cand: Mapping[str, Any], s: RetrainSettings
) -> dict[str, Any]:
    a, b = cur.get(metric), cand.get(metric)
    keep = _rows_for(metric, cur["_oos"])
    pairs = [(x, y) for x, y, k in zip(cur["_right"], cand["_right"], keep, strict=True) if k]
    only_cur = sum(x and not y for x, y in pairs)
    only_cand = sum(y and not x for x, y in pairs)
    p = sign_test_p(only_cur, only_cand)
    verdict: Verdict = "same"
    delta = None if a is None or b is None else float(b - a)
    if delta is not None and (p < s.alpha or s.alpha >= 1):
        if delta < -s.tolerance and only_cur > only_cand:
            verdict = "worse"
        elif delta > s.tolerance and only_cand > only_cur:
            verdict = "better"
    return {
        "delta": delta,
        "only_current_right": only_cur,
        "only_candidate_right": only_cand,
        "p_value": p,
        "verdict": verdict,
    }


def compare_slice(cur: dict[str, Any], cand: dict[str, Any], s: RetrainSettings) -> dict[str, Any]:
    checks = {m: check(m, cur, cand, s) for m in s.metrics}
    everything = check("accuracy", cur, cand, s)
    for d in (cur, cand):
        d.pop("_right"), d.pop("_oos")
    return {
        "current": cur,
        "candidate": cand,
        "checks": checks,
        "verdict": overall(checks),
        "only_current_right": everything["only_current_right"],
        "only_candidate_right": everything["only_candidate_right"],
    }


def overall(parts: Mapping[str, Mapping[str, Any]]) -> Verdict:
    verdicts = [v["verdict"] for v in parts.values()]
    if "worse" in verdicts:
        return "worse"
    return "better" if "better" in verdicts else "same"


def retrain(
    base: Sequence[Row],
    feedback: Sequence[Row],
    current: Classifier,
    s: RetrainSettings,
    eval_rows: Sequence[Row] | None = None,
    calibration: Sequence[Row] | None = None,
) -> RetrainResult:
    """Train a candidate on base + feedback and compare it with `current` (see module doc).
    `calibration`: rows for the candidate's OOS threshold (default: 10% of its training rows)."""
    from classifiers.train import Dataset, train_datasets

    if eval_rows is None:
        base_train, base_eval = split(base, s.holdout, s.seed)
    else:
        base_train, base_eval = list(base), list(eval_rows)
    fb_train, fb_eval = split(feedback, s.feedback_holdout, s.seed + 1)
    train_rows = base_train + fb_train * max(1, s.feedback_weight)
    if not train_rows:
        raise ValueError("no training rows (base data and feedback are empty)")
    if calibration:
        fit_rows, calib_rows = train_rows, list(calibration)
    else:
        fit_rows, calib_rows = split(train_rows, 0.1, s.seed + 2)
    data_sha = sha256_json([[r.text, r.label] for r in train_rows])
    identity = {
        "data": data_sha,
        "kind": s.kind,
        "seed": s.seed,
        "params": dict(s.params),
        "oos_label": s.oos_label,
        "label_field": s.label_field,
    }
    candidate = train_datasets(
        Dataset([r.text for r in fit_rows], [r.label for r in fit_rows]),
        Dataset([r.text for r in calib_rows], [r.label for r in calib_rows]),
        kind=s.kind,
        oos_label=s.oos_label,
        seed=s.seed,
        params=dict(s.params),
        base_meta={
            "version": sha256_json(identity)[:12],
            "data_sha256": data_sha,
            "text_field": s.text_field,
            "label_field": s.label_field,
        },
    )
    slices = {"base": base_eval, "feedback": fb_eval}
    compared = {
        name: compare_slice(score(current, rows, s), score(candidate, rows, s), s)
        | {"n": len(rows), "slice_sha": _slice_id(rows)}
        for name, rows in slices.items()
        if rows
    }
    verdict = overall(compared)
    report = {
        "object": "classifier.comparison",
        "verdict": verdict,
        "promotable": verdict != "worse" or s.force,
        "forced": s.force and verdict == "worse",
        "metrics": list(s.metrics),
        "tolerance": s.tolerance,
        "alpha": s.alpha,
        "current": _identity(current),
        "candidate": _identity(candidate),
        "training": {
            "base_rows": len(base_train),
            "feedback_rows": len(fb_train),
            "feedback_weight": s.feedback_weight,
            "data_sha256": data_sha,
            "labels_added": sorted(set(candidate.labels) - set(current.labels)),
        },
        "slices": compared,
    }
    return RetrainResult(candidate, report)


def _identity(clf: Classifier) -> dict[str, Any]:
    info = clf.info()
    return {"kind": info.kind, "version": info.version, "data_sha256": info.data_sha256}


def format_markdown(report: Mapping[str, Any]) -> str:
    cur, cand = report["current"], report["candidate"]
    lines = [
        f"# Classifier comparison: {report['verdict']}"
        + (" (forced)" if report.get("forced") else ""),
        "",
        f"- live: {cur['kind']} {cur['version']}; candidate: {cand['kind']} {cand['version']}",
        f"- promotable: {report['promotable']}; checked: {', '.join(report['metrics'])} "
        f"(worse = a drop over {report['tolerance']} with paired p < {report['alpha']})",
        "",
        "| slice | n | metric | live | candidate | delta | only live right "
        "| only cand. right | p | verdict |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, sl in report["slices"].items():
        for m in METRICS:
            a, b = sl["current"].get(m), sl["candidate"].get(m)
            if a is None and b is None:
                continue
            delta = "" if a is None or b is None else f"{b - a:+.4f}"
            c = sl["checks"].get(m)
            tail = (
                f"{c['only_current_right']} | {c['only_candidate_right']} | {c['p_value']:.3g} "
                f"| {c['verdict']}"
                if c
                else " | | | (not checked)"
            )
            lines.append(f"| {name} | {sl['n']} | {m} | {_f(a)} | {_f(b)} | {delta} | {tail} |")
    return "\n".join(lines) + "\n"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def write_outputs(result: RetrainResult, out: Path) -> None:
    from classifiers.train import save_classifier

    save_classifier(result.candidate, out)
    (out / REPORT_JSON).write_text(json.dumps(result.report, indent=2), encoding="utf-8")
    (out / REPORT_MD).write_text(format_markdown(result.report), encoding="utf-8")


# ---- CLI -----------------------------------------------------------------------------------


def add_retrain_subcommand(subparsers: Any) -> None:
    """`retrain` on the `classifier` command's subparsers."""
    p = subparsers.add_parser(
        "retrain", help="train a candidate from base data + feedback and compare it with the live"
    )
    p.add_argument("--base-data", required=True, type=Path, help="training JSONL")
    p.add_argument(
        "--feedback",
        type=Path,
        action="append",
        default=[],
        help="`feedback export` JSONL (repeatable)",
    )
    p.add_argument("--current", required=True, type=Path, help="the live artifact directory")
    p.add_argument("--out", required=True, type=Path, help="candidate artifact directory")
    p.add_argument("--eval", type=Path, help="held-out JSONL (default: --holdout of base)")
    p.add_argument("--label-field", help="default: the live artifact's")
    p.add_argument("--text-field", default="text")
    p.add_argument("--oos-label", help="default: the live artifact's")
    p.add_argument("--kind", help="default: the live artifact's")
    p.add_argument("--params", help="JSON object (default: the live artifact's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--feedback-holdout", type=float, default=0.3)
    p.add_argument("--feedback-weight", type=int, default=1)
    p.add_argument(
        "--metric",
        choices=METRICS,
        action="append",
        dest="metrics",
        help="metric that must not get worse (repeatable; default macro_f1 and oos_recall)",
    )
    p.add_argument("--tolerance", type=float, default=0.0, help="allowed drop before 'worse'")
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="paired-test level: a drop counts only if p < alpha (1 disables)",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        help="JSONL for the candidate's OOS threshold (default: 10%% of its rows)",
    )
    p.add_argument("--force", action="store_true", help="mark a worse candidate promotable")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_cli)


def settings_from(args: argparse.Namespace, meta: Any) -> RetrainSettings:
    params = json.loads(args.params) if args.params else dict(meta.params)
    if not isinstance(params, dict):
        raise ValueError("--params must be a JSON object")
    return RetrainSettings(
        kind=args.kind or meta.kind,
        label_field=args.label_field or meta.label_field or "domain",
        text_field=args.text_field,
        oos_label=args.oos_label or meta.oos_label,
        seed=args.seed,
        params=params,
        holdout=args.holdout,
        feedback_holdout=args.feedback_holdout,
        feedback_weight=args.feedback_weight,
        metrics=tuple(args.metrics or ("macro_f1", "oos_recall")),
        alpha=args.alpha,
        tolerance=args.tolerance,
        force=args.force,
    )


def run_cli(args: argparse.Namespace) -> int:
    from classifiers.artifact import load_artifact
    from classifiers.text import read_jsonl

    current = load_artifact(args.current)
    s = settings_from(args, current.meta)
    base = to_rows(read_jsonl(args.base_data), s.label_field, s.text_field)
    feedback = [
        row
        for path in args.feedback
        for row in to_rows(read_jsonl(path), FEEDBACK_LABEL, s.text_field)
    ]
    eval_rows = to_rows(read_jsonl(args.eval), s.label_field, s.text_field) if args.eval else None
    calib = (
        to_rows(read_jsonl(args.calibration), s.label_field, s.text_field)
        if args.calibration
        else None
    )
    result = retrain(base, feedback, current, s, eval_rows, calib)
    write_outputs(result, args.out)
    report = result.report
    print(json.dumps(report, indent=2) if args.json else format_markdown(report), end="")
    print(f"wrote {args.out} ({REPORT_JSON}, {REPORT_MD})", file=sys.stderr)
    if not result.promotable:
        print(
            "refused: the candidate is worse than the live classifier (--force to mark it "
            "promotable anyway)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slm-router classifier")
    add_retrain_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
