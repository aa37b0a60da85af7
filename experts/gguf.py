"""GGUF checkpoints, converted once into a plain Hugging Face folder and cached.

transformers dequantises a GGUF file on every load (30-40 s for SmolLM2-135M on a small CPU);
a saved safetensors folder loads in about a second. The cache key is the file's content hash,
so a changed file is converted again and a renamed one is not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from experts.files import file_sha256

log = logging.getLogger(__name__)

# Bump when the conversion's output changes shape, so stale cache entries are not reused.
_FORMAT = "hf-v2"
_DONE_MARKER = "slm-router-source.json"


def cache_root() -> Path:
    """`$SLM_ROUTER_CACHE`, else `$XDG_CACHE_HOME/slm-router`, else `~/.cache/slm-router`."""
    explicit = os.environ.get("SLM_ROUTER_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slm-router"


def resolve_gguf(source: str, gguf_file: str) -> Path:
    """The GGUF file on disk: an absolute path, a file in the `source` folder, or a hub file."""
    direct = Path(gguf_file)
    if direct.is_absolute() and direct.is_file():
        return direct
    local = Path(source) / gguf_file
    if local.is_file():
        return local
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(source, gguf_file))


def converted_dir(gguf_path: Path, root: Path | None = None) -> Path:
    key = hashlib.sha256(f"{_FORMAT}:{file_sha256(gguf_path)}".encode()).hexdigest()[:24]
    return (root or cache_root()) / "models" / key


def materialize_gguf(source: str, gguf_file: str, *, root: Path | None = None) -> Path:
    """A local HF folder equivalent to the GGUF checkpoint, converting it on first use."""
    gguf_path = resolve_gguf(source, gguf_file)
    target = converted_dir(gguf_path, root)
    if (target / _DONE_MARKER).is_file():
        return target
    log.info("converting %s to a Hugging Face folder at %s (once)", gguf_path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert(gguf_path, tmp)
        (tmp / _DONE_MARKER).write_text(json.dumps({"gguf": str(gguf_path), "format": _FORMAT}))
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _publish(tmp: Path, target: Path) -> None:
    # rename is atomic: readers see no folder or a complete one. A concurrent converter (another
    # replica) may have won the race; its result is as good as ours.
    try:
        os.rename(tmp, target)
    except OSError:
        if not (target / _DONE_MARKER).is_file():
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)


def _convert(gguf_path: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = _plain_tokenizer(AutoTokenizer.from_pretrained(folder, gguf_file=name), gguf_path)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    _clean_copy(loaded).save_pretrained(out)
    tokenizer.save_pretrained(out)
    if loaded.generation_config is not None:
        loaded.generation_config.save_pretrained(out)


def _clean_copy(loaded: Any) -> Any:
    """A model built from the config with the dequantised weights: no GGUF state attached.

    save_pretrained refuses models that still remember being loaded from GGUF.
    """
    from transformers import AutoModelForCausalLM

    config = loaded.config
    for attr in ("gguf_file", "quantization_config"):
        if hasattr(config, attr):
            delattr(config, attr)
    clean = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    missing, unexpected = clean.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings legitimately show up as missing lm_head weights.
    real_missing = [k for k in missing if not k.startswith("lm_head")]
    if real_missing or unexpected:
        raise RuntimeError(
            f"GGUF conversion lost weights: missing={real_missing} extra={unexpected}"
        )
    clean.tie_weights()
    return clean


def _plain_tokenizer(converted: Any, gguf_path: Path) -> Any:
    """The GGUF's tokenizer as a plain fast tokenizer, special tokens from the GGUF's own ids.

    transformers' GGUF mapping guesses a Python tokenizer class and special tokens; some releases
    guess wrong (5.3 loads SmolLM2's byte-level BPE as CodeLlamaTokenizer, whose decoder leaves
    'Ġ' in the text, with eos = <|im_start|>). The Rust tokenizer it builds is right, so keep only
    that, wrapped in the generic class, and name the special tokens by the file's ids.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    vocab_size, ids, add_bos, model = _gguf_token_facts(gguf_path)
    data = json.loads(converted.backend_tokenizer.to_str())
    if not add_bos:  # the guessed class prepends a BOS the file says not to add
        data["post_processor"] = None
    if model == "gpt2":
        # Byte-level BPE decodes with ByteLevel alone; the guessed SentencePiece steps in front
        # of it make llguidance misread token bytes (JSON mode then fails on the first ':').
        data["decoder"] = {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        }
    # The guessed class also adds its own tokens (CodeLlama's <PRE>/<MID>/...) past the file's
    # vocabulary; the model has no embeddings for them and constrained decoding refuses them.
    data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < vocab_size]
    backend = Tokenizer.from_str(json.dumps(data))
    special = {
        role: backend.id_to_token(idx)
        for role, idx in ids.items()
        if backend.id_to_token(idx) is not None
    }
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, **special)
    plain.chat_template = getattr(converted, "chat_template", None)
    return plain


def _gguf_token_facts(gguf_path: Path) -> tuple[int, dict[str, int], bool, str]:
    """The file's vocabulary size, special token ids by role, whether it adds a BOS, its model."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    roles = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding"}
    found: dict[str, int] = {}
    for role, key in roles.items():
        field = fields.get(f"tokenizer.ggml.{key}_token_id")
        if field is not None:
            found[role] = int(field.contents())
    add_bos = fields.get("tokenizer.ggml.add_bos_token")
    adds = bool(add_bos.contents()) if add_bos is not None else False
    kind = fields.get("tokenizer.ggml.model")
    model = str(kind.contents()) if kind is not None else ""
    return len(fields["tokenizer.ggml.tokens"].data), found, adds, model
