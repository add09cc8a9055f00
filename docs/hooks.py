"""MkDocs hook: the pages generated at build time, so that a figure or a reference lives in one place.

- ``reference/params.md``: every key of params.yaml, its type and default from ecgpipe's own schema
  (``ecgpipe.params``), its value and comment from params.yaml;
- ``reference/cli.md``: every ``ecgpipe`` command's help, from its argparse parser;
- ``reference/dag.md``: the stages' graph, as ``dvc dag --md`` draws it;
- ``reference/studies.md``: the committed studies (``reports/**/study.md``), each a page of its own;
- the committed results (``reports/``, ``tasks/*/reports/``) and the shipped detector's model card
  (``pretrained/MODEL_CARD.md``) at their paths in the repository, and every other repository file
  a page links to, so that a link from a page to a file resolves and ``mkdocs build --strict`` fails
  on one that does not.
"""
from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
import typing
from contextlib import redirect_stdout
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
# the committed results: the report's, every task's (tasks/NAME/reports), the shipped detector's card
RESULTS = ("reports", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("tasks/*/reports")), "pretrained/MODEL_CARD.md")
RESULT_SUFFIXES = {".md", ".png", ".csv", ".json"}
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def _params_reference() -> str:
    """One table per section of params.yaml: key, type, default (the schema's) and value and comment
    (params.yaml's)."""
    import yaml

    from ecgpipe import params as schema

    raw_lines = (ROOT / "params.yaml").read_text().splitlines()
    values = yaml.safe_load((ROOT / "params.yaml").read_text())

    def comment(section: str, key: str) -> str:
        inside = False
        for line in raw_lines:
            if re.match(rf"^{re.escape(section)}:", line):
                inside = True
                continue
            if inside and re.match(r"^\S", line):
                break
            found = re.match(rf"^\s+{re.escape(key)}:[^#]*#\s*(.*)$", line) if inside else None
            if found:
                return found[1].replace("|", "\\|")
        return ""

    def type_name(tp) -> str:
        text = str(tp).replace("typing.", "").replace("ecgpipe.params.", "").replace("ecgpipe.signal.", "")
        return "`" + re.sub(r"<class '([^']+)'>", r"\1", text).replace(" | ", " or ") + "`"

    hints = typing.get_type_hints(schema.Params)
    out = ["# params.yaml, every key", "",
           "Generated when the site is built, from `ecgpipe/params.py` (types and defaults; pydantic checks every "
           "key when a stage starts) and `params.yaml` (values and comments). Experiments, shifts and tasks are "
           "named entries: their keys are those of one entry.", ""]
    for field in dataclasses.fields(schema.Params):
        section_type = hints[field.name]
        entry = typing.get_args(section_type)[-1] if typing.get_origin(section_type) is dict else section_type
        out += [f"## `{field.name}`", ""]
        if not dataclasses.is_dataclass(entry):
            out += [f"{type_name(section_type)}: `{values.get(field.name)!r}`" if field.name in values else
                    type_name(section_type), ""]
            continue
        out += ["| key | type | default | params.yaml | comment |", "|---|---|---|---|---|"]
        entry_hints = typing.get_type_hints(entry)
        section_values = values.get(field.name) or {}
        for sub in dataclasses.fields(entry):
            if sub.default is not dataclasses.MISSING:
                default = f"`{sub.default!r}`"
            elif sub.default_factory is not dataclasses.MISSING:
                default = f"`{sub.default_factory()!r}`"
            else:
                default = "required"
            value = section_values.get(sub.name, "") if typing.get_origin(section_type) is not dict else ""
            shown = f"`{value!r}`" if value != "" else ""
            out.append(f"| `{sub.name}` | {type_name(entry_hints[sub.name])} | {default} | {shown} | "
                       f"{comment(field.name, sub.name)} |")
        out.append("")
    return "\n".join(out) + "\n"


def _cli_reference() -> str:
    """Every command's ``--help``, from the parser ``ecgpipe`` runs."""
    import argparse

    from ecgpipe.cli import build_parser

    def helps(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
        text = parser.format_help()
        found = [f"## `{' '.join(words)}`", "", "```text", text.rstrip(), "```", ""]
        for action in parser._actions:  # argparse keeps subcommands only here
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += helps(sub, [*words, name])
        return found

    parser = build_parser()
    parser.prog = "ecgpipe"
    with redirect_stdout(io.StringIO()):
        pages = helps(parser, ["ecgpipe"])
    return "# Command line\n\nGenerated when the site is built, from `ecgpipe --help` of every command.\n\n" + "\n".join(pages)


def _dvc(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _dag() -> str:
    """The stages' graph: a table of each stage and the stages it runs after (``dvc dag --dot``'s edges,
    readable offline), and ``dvc dag --md``'s Mermaid graph (drawn where the browser can load Mermaid)."""
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', _dvc("dag", "--dot"))
    stages = re.findall(r'^"([^"]+)";$', _dvc("dag", "--dot"), flags=re.MULTILINE)
    after = {stage: sorted(a for a, b in edges if b == stage) for stage in stages}
    rows = [f"| `{stage}` | {', '.join(f'`{a}`' for a in after[stage]) or '–'} |" for stage in stages]
    return ("# The DVC graph\n\nGenerated when the site is built, from `dvc dag`: every stage of `dvc.yaml` "
            "(in an order `dvc repro` may run them) and the stages whose outputs it reads. A changed input reruns "
            "the stage and what reads its outputs.\n\n| stage | runs after |\n|---|---|\n" + "\n".join(rows)
            + "\n\n## As a graph\n\n" + _dvc("dag", "--md"))


def _studies(paths: list[str]) -> str:
    lines = ["# Studies", "", "The committed cross-validation studies (`reports/**/study.md`), generated from the "
             "files as committed. Each says the command, commits and machines that made it.", ""]
    for path in sorted(paths):
        title = (ROOT / path).read_text().splitlines()[0].lstrip("# ").strip()
        lines.append(f"- [{path}](../{path}): {title}")
    return "\n".join(lines) + "\n"


def _repository_files(root: str, suffixes: set[str]) -> list[str]:
    path = ROOT / root
    if path.is_file():
        return [root]
    return sorted(str(p.relative_to(ROOT)) for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)


def on_files(files, config):
    def add(src_uri: str, content: str | bytes) -> None:
        if files.get_file_from_path(src_uri) is None:
            files.append(File.generated(config, src_uri, content=content))

    add("reference/params.md", _params_reference())
    add("reference/cli.md", _cli_reference())
    add("reference/dag.md", _dag())
    results = [p for root in RESULTS for p in _repository_files(root, RESULT_SUFFIXES)]
    for path in results:
        add(path, (ROOT / path).read_bytes())
    add("reference/studies.md", _studies([p for p in results if p.endswith("/study.md")]))
    # a page's link to a repository file (dvc.yaml, benchmarks/README.md ...): that file, at its path
    docs = Path(config["docs_dir"])
    for page in docs.rglob("*.md"):
        for target, _ in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (page.parent / target).resolve()
            try:
                relative = str(resolved.relative_to(docs.resolve()))
            except ValueError:
                continue
            if not resolved.exists() and (ROOT / relative).is_file():
                add(relative, (ROOT / relative).read_bytes())
    return files
