"""The package's structure: every stage's `dvc.yaml` deps cover the ecgpipe code it runs.

DVC reruns a stage when one of its deps changes; a module the stage imports but does not list
would change the stage's outputs without DVC knowing. The import-linter contract in
`pyproject.toml` (run by `.ci/run`) keeps the layers' direction; this test keeps the deps true.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ecgpipe.core import imports

ROOT = Path(__file__).resolve().parents[1]


def import_closure(script: Path) -> set[Path]:
    """The ecgpipe files that running ``script`` executes, except import-free ``__init__.py`` files."""
    return {p for p in imports.import_closure(ROOT, script) if imports.runs_code(ROOT / p)}


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
        # a dep on code that is gone (a module renamed) stops `dvc repro` and `dvc commit` alike
        lacking += [f"{dep} (no such file)" for dep in body["deps"]
                    if dep.startswith(("ecgpipe", "stages/")) and not (ROOT / dep).exists()]
        if lacking:
            missing[name] = lacking
    assert not missing, f"stages whose dvc.yaml deps miss modules they import: {missing}"


def test_the_closure_follows_imports_inside_functions():
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


def imported_after_loading_params(stages: list[str], package: str) -> list[str]:
    """The modules of ``package`` that a fresh process holds after importing the pipeline modules of
    ``stages`` and reading params.yaml, as those stages' processes do."""
    code = ("import sys\n"
            "from ecgpipe.params import load_params\n"
            f"import ecgpipe.pipeline.stage, {', '.join(f'ecgpipe.pipeline.{s}' for s in stages)}\n"
            "load_params('params.yaml')\n"
            f"print(' '.join(sorted(m for m in sys.modules if m == {package!r} or m.startswith({package + '.'!r}))))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_stages_that_never_filter_a_signal_start_without_scipy_signal():
    """scipy.signal takes about a second to import, and every stage reads params.yaml (whose shifts
    use it): the stages that cut, split or balance import it only where a signal is filtered."""
    stages = ["check", "download", "split", "balance", "chunk", "signals", "train"]
    assert imported_after_loading_params(stages, "scipy.signal") == []


def test_stages_that_never_hold_a_tensor_start_without_torch():
    """torch takes over a second to import and every stage reads params.yaml: the stages that check
    params, write a task's params, fetch the archive or balance a split's rows never import it."""
    assert imported_after_loading_params(["check", "task", "download", "balance"], "torch") == []
    assert "torch" in imported_after_loading_params(["split"], "torch")  # the check sees torch when it is there


def test_each_tasks_stage_runs_what_the_notebooks_stage_of_the_same_name_runs():
    """dvc.yaml's task_X family repeats the notebook's stage X on the task's params file (dvc.yaml has
    no way to share a stage's lists): the same code, the same params keys, the same script."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("spectrogram", "signals", "split", "balance", "chunk", "train", "evaluate", "report"):
        notebook, task = stages[name].get("do", stages[name]), stages[f"task_{name}"]
        task = task.get("do", task)
        code = [d for d in notebook["deps"] if d.startswith(("ecgpipe", "stages/"))]
        assert [d for d in task["deps"] if d.startswith(("ecgpipe", "stages/"))] == code, name
        assert task["cmd"].split()[:4] == ["python", f"stages/{name}.py", "--params", task["cmd"].split()[3]], name
        keys = [k.replace("${key}", "${item.experiment}") for k in notebook.get("params", [])]
        task_keys = next(iter(task["params"][0].values())) if task.get("params") else []
        # the one key more: a task's report reads the task's rhythm ensembles (the workspace makes none)
        assert [k for k in task_keys if not (name == "report" and k == "ensembles")] == keys, name
