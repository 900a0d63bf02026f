"""The console scripts declared in setup.py: each resolves to a function in `diffusers_aligntok.commands`, answers
`--help` (its CLI module imports as installed), and returns an exit status, not its Python result."""

import ast
import importlib
import sys
from pathlib import Path

import pytest

from diffusers_aligntok import commands


def _console_scripts() -> dict[str, str]:
    setup = ast.parse((Path(__file__).resolve().parents[1] / "setup.py").read_text())
    for node in ast.walk(setup):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return dict(entry.value.split("=", 1) for entry in value.elts)
    raise AssertionError("setup.py declares no console_scripts")


CONSOLE_SCRIPTS = _console_scripts()


def test_every_console_script_is_a_command():
    assert len(CONSOLE_SCRIPTS) >= 8
    for name, target in CONSOLE_SCRIPTS.items():
        module, function = target.split(":")
        assert module == "diffusers_aligntok.commands", f"{name} bypasses diffusers_aligntok.commands"
        assert callable(getattr(commands, function)), f"{name}: no function {function} in commands"


@pytest.mark.parametrize("name", sorted(CONSOLE_SCRIPTS))
def test_console_script_answers_help(name, monkeypatch, capsys):
    function = getattr(commands, CONSOLE_SCRIPTS[name].split(":")[1])
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        function()
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_command_returns_an_exit_status_not_the_result(monkeypatch):
    # The CLI's main returns its results dictionary to Python callers; the console script must still exit 0.
    cli = importlib.import_module("diffusers_aligntok.evaluation.tokenizer_cli")
    monkeypatch.setattr(cli, "main", lambda argv=None: {"tokenizers": []})
    assert commands.evaluate_tokenizer() == 0
