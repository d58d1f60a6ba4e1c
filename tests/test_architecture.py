"""The package layers hold: import-linter's contracts (pyproject `[tool.importlinter]`) are kept, and
each contract really bites: a deliberately wrong import in a scratch copy of the package breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_the_contracts_are_kept() -> None:
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "7 kept, 0 broken" in out.stdout


def test_every_package_states_its_contract() -> None:
    for init in sorted((ROOT / "webhook").glob("*/__init__.py")):
        text = init.read_text(encoding="utf-8")
        assert text.startswith('"""'), init
        assert "import" in text.split('"""')[1], f"{init}: the docstring must say what the package may not import"


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        pytest.param("core/quantity.py", "import fastapi", "Pure:", id="core-imports-fastapi"),
        pytest.param("core/ledger.py", "import webhook.state.live", "Layers:", id="core-imports-state"),
        pytest.param("core/estimate.py", "import orjson", "Core:", id="core-imports-orjson"),
        pytest.param("admission/mutation.py", "import webhook.http.server", "Layers:", id="admission-imports-http"),
        pytest.param("state/live.py", "import webhook.admission.mutation", "Layers:", id="state-imports-admission"),
        pytest.param("http/server.py", "import webhook.cli.main", "Layers:", id="http-imports-cli"),
        pytest.param("audit/run.py", "import kubernetes", "Only webhook.state and", id="audit-imports-kubernetes"),
        pytest.param("state/live.py", "import cryptography", "Only webhook.install", id="state-imports-cryptography"),
        pytest.param("install/certs.py", "import uvicorn", "Only webhook.http imports", id="install-imports-uvicorn"),
        pytest.param("core/catalog_import.py", "import gguf", "Only webhook.state reads GGUF", id="core-imports-gguf"),
        pytest.param("cli/catalog.py", "import numpy", "Only webhook.state reads GGUF", id="cli-imports-numpy"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    shutil.copytree(ROOT / "webhook", tmp_path / "webhook", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "webhook" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # deliberately wrong\n", encoding="utf-8")
    out = lint_imports(tmp_path)
    assert out.returncode == 1, out.stdout[-3000:]
    broken_lines = [ln for ln in out.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert broken_lines, out.stdout[-3000:]
    assert any(ln.startswith(broken) for ln in broken_lines), broken_lines
    assert module.replace("/", ".").removesuffix(".py") in out.stdout  # the report names the offending module
