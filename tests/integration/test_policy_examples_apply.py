"""`slm-router policy apply` against the running Serve app: an invalid file is rejected with
its issues and the running policy keeps serving (reload under load is the lead's suite)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from router.ops.cli import main


def test_apply_invalid_file_changes_nothing(
    gateway_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ray import serve

    from router.serving.app import APP_NAME

    before = serve.status().applications[APP_NAME].deployments
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nexperts:\n  a: {backend: fake}\nrouting:\n  fallback: b\n")
    assert main(["policy", "apply", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:5:13: error: routing.fallback: unknown expert 'b'" in err
    assert "not applied" in err
    assert serve.status().applications[APP_NAME].deployments.keys() == before.keys()
    r = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json={
            "model": "auto",
            "messages": [{"role": "user", "content": "write a python function"}],
        },
        timeout=60,
    )
    assert r.status_code == 200
