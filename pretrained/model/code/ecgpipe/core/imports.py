"""Which ecgpipe files a module runs: the static import closure (imports inside functions too).

The served model ships exactly its closure (``tracking/pyfunc.py``); the tests check each DVC
stage's deps against its script's closure.
"""
from __future__ import annotations

import ast
from pathlib import Path


def module_file(root: Path, name: str) -> Path | None:
    """The file of module ``name`` (``ecgpipe.x.y``) under ``root`` (a package's ``__init__.py``), or None."""
    base = Path(root).joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(root: Path, path: Path) -> set[str]:
    """The ecgpipe modules that ``path`` imports anywhere, with the packages whose ``__init__``
    each import runs."""
    found = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] != "ecgpipe":
                continue
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1)
                         if module_file(root, ".".join(parts[:i])))
    return found


def runs_code(path: Path) -> bool:
    """False for a package's ``__init__.py`` that imports nothing (a docstring, a version string)."""
    return path.name != "__init__.py" or any(isinstance(node, (ast.Import, ast.ImportFrom))
                                             for node in ast.parse(path.read_text()).body)


def import_closure(root: Path, path: Path) -> set[Path]:
    """Every ecgpipe file under ``root`` that running ``path`` may execute (every ``__init__.py``
    on the way included), relative to ``root``."""
    return _closure(root, imported_modules(root, path))


def module_closure(root: Path, name: str) -> set[Path]:
    """Every ecgpipe file under ``root`` that importing module ``name`` executes, the module's own
    file and its packages' ``__init__.py`` included, relative to ``root``."""
    parts = name.split(".")
    return _closure(root, {".".join(parts[:i]) for i in range(1, len(parts) + 1)})


def _closure(root: Path, modules: set[str]) -> set[Path]:
    seen, todo = set(), list(modules)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported_modules(root, module_file(root, name)) - seen)
    return {module_file(root, name).relative_to(root) for name in seen}
