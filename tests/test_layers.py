"""The package's structure: every stage's `dvc.yaml` deps cover the ecgpipe code it runs.

DVC reruns a stage when one of its deps changes; a module the stage imports but does not list
would change the stage's outputs without DVC knowing. The import-linter contract in
`pyproject.toml` (run by `.ci/run`) keeps the layers' direction; this test keeps the deps true.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """The file of module ``ecgpipe.x.y`` in this checkout (a package's ``__init__.py``), or None."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """The ecgpipe modules that ``path`` imports anywhere (inside functions too), with the
    packages whose ``__init__`` each import runs."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] != "ecgpipe":
                continue
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i])))
    return found


def import_closure(path: Path) -> set[Path]:
    """Every ecgpipe file that running ``path`` may execute, relative to the project's root."""
    seen, todo = set(), list(imported_modules(path))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_modules(module_file(name)) - seen)
    return {module_file(name).relative_to(ROOT) for name in seen if runs_code(module_file(name))}


def runs_code(path: Path) -> bool:
    """False for a package's ``__init__.py`` that imports nothing (a docstring, a version string)."""
    return path.name != "__init__.py" or any(isinstance(node, (ast.Import, ast.ImportFrom))
                                             for node in ast.parse(path.read_text()).body)


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(dep) or Path(dep) in path.parents for dep in deps)


def test_every_stage_lists_the_ecgpipe_code_it_runs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)  # a foreach stage's template
        script = ROOT / body["cmd"].split()[1]
        assert str(script.relative_to(ROOT)) in body["deps"], f"stage {name}: its script {script} is not a dep"
        lacking = sorted(str(p) for p in import_closure(script) if not covered(p, body["deps"]))
        if lacking:
            missing[name] = lacking
    assert not missing, f"stages whose dvc.yaml deps miss modules they import: {missing}"


def test_the_closure_follows_imports_inside_functions(tmp_path):
    """The check itself: a stage module that imports a module inside a function depends on it."""
    closure = import_closure(ROOT / "stages" / "evaluate.py")
    assert Path("ecgpipe/tracking/pyfunc.py") in closure  # imported inside run_evaluate only
    assert Path("ecgpipe/reporting/plots.py") in closure
    assert not covered(Path("ecgpipe/tracking/pyfunc.py"), ["ecgpipe/data", "ecgpipe/tracking.py"])
    assert covered(Path("ecgpipe/tracking/pyfunc.py"), ["ecgpipe/tracking"])


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    """import-linter's `lint-imports` on the package and contract of ``project``."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=project, env=env,
                          capture_output=True, text=True)


def test_every_import_goes_down_and_an_upward_one_is_caught(tmp_path):
    """The layers contract of pyproject.toml holds (also run by .ci/run), and it catches an upward
    import even inside a function."""
    kept = lint_imports(ROOT)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "1 kept, 0 broken" in kept.stdout
    shutil.copytree(ROOT / "ecgpipe", tmp_path / "ecgpipe", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    units = tmp_path / "ecgpipe" / "core" / "units.py"
    units.write_text(units.read_text() + "\n\ndef _upward():\n    from ecgpipe.pipeline import stage  # noqa\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "ecgpipe.core.units -> ecgpipe.pipeline.stage" in broken.stdout
