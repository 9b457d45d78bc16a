"""The package layering of docs/architecture.md holds (import-linter), and the
runtime depends on no concrete model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from steerline import Agent

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_agent_without_model_is_refused() -> None:
    with pytest.raises(TypeError, match="DemoModel"):
        Agent()
