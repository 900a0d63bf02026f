"""Fixtures of the training-script tests: a stand-in for `diffusers_aligntok.hub.push_to_hub`."""

import sys
import types
from pathlib import Path

import pytest


@pytest.fixture
def fake_push_to_hub(monkeypatch) -> list[dict]:
    """Replaces `diffusers_aligntok.hub.push_to_hub` (injected as a module when the Hub code is absent) by a recorder.

    Each call appends its arguments and the files the model directory held at push time. The signature is the real
    one, keyword-only arguments included, so a call the real function would reject fails here too.
    """
    calls: list[dict] = []

    def push_to_hub(
        model_dir,
        repo_id,
        *,
        evaluation_json=(),
        token=None,
        private=False,
        revision=None,
        commit_message=None,
        license="apache-2.0",
        dry_run_dir=None,
    ) -> str:
        calls.append(
            {
                "model_dir": Path(model_dir),
                "repo_id": repo_id,
                "token": token,
                "private": private,
                "files": sorted(path.name for path in Path(model_dir).iterdir()),
            }
        )
        return f"https://huggingface.co/{repo_id}"

    try:
        import diffusers_aligntok.hub as hub

        # raising=False: the Hub package may exist before it defines push_to_hub (it is written alongside).
        monkeypatch.setattr(hub, "push_to_hub", push_to_hub, raising=False)
    except ImportError:
        module = types.ModuleType("diffusers_aligntok.hub")
        module.push_to_hub = push_to_hub
        monkeypatch.setitem(sys.modules, "diffusers_aligntok.hub", module)
    return calls
