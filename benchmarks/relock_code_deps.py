"""Re-record the hashes of the code deps (ecgpipe/, stages/) in dvc.lock, keeping every output's
recorded hash: for a change of code shown to leave the outputs byte-identical (benchmarks/same_bytes.sh),
where the outputs themselves (the DVC cache) are not at hand for `dvc commit`. Edits the lock's text
in place. Never use it for a change that was not shown to keep the outputs: the lock would then claim
outputs that the code does not make.

Code deps that dvc.yaml no longer lists are dropped from the lock.

`--params STAGE` instead records the values of the params STAGE lists in dvc.yaml (for params newly
listed there), keeping every hash: only where `git log params.yaml` shows those values unchanged since
the stage's outputs were made, so the lock says what made them.
"""
import re
import sys

from dvc.repo import Repo

repo = Repo(".")
if sys.argv[1:2] == ["--params"]:
    from dvc.dependency.param import ParamsDependency

    stages = {s.addressing: s for s in repo.index.stages}
    if len(sys.argv) != 3 or sys.argv[2] not in stages:
        sys.exit(f"--params STAGE: expected one stage of dvc.yaml, e.g. report; got {sys.argv[2:]}")
    stage = stages[sys.argv[2]]
    for dep in stage.deps:
        if isinstance(dep, ParamsDependency):
            dep.save()  # reads params.yaml; other deps keep the hashes the lock holds
    stage.dump(update_pipeline=False)
    sys.exit(0)
new = {}
for stage in repo.index.stages:
    for dep in stage.deps:
        if dep.def_path.startswith(("ecgpipe", "stages/")):
            dep.save()
            new[stage.addressing, dep.def_path] = {k: v for k, v in dep.dumpd().items() if k in ("md5", "size", "nfiles")}
lines = open("dvc.lock").read().split("\n")
stage = section = path = None
changed = set()
for i, line in enumerate(lines):
    if m := re.match(r"^  (\S.*):$", line):
        stage, section, path = m.group(1), None, None
    elif m := re.match(r"^    (deps|outs|params):", line):
        section, path = m.group(1), None
    elif m := re.match(r"^    - path: (.*)$", line):
        path = m.group(1)
    elif section == "deps" and (stage, path) in new and (m := re.match(r"^      (md5|size|nfiles): (.*)$", line)):
        value = str(new[stage, path][m.group(1)])
        if m.group(2) != value:
            lines[i] = f"      {m.group(1)}: {value}"
            changed.add((stage, path))
# a code dep that dvc.yaml no longer lists (a module renamed or merged): its entry goes, as `dvc repro` would drop it
listed = {(s.addressing, d.def_path) for s in repo.index.stages for d in s.deps}
kept, dropped, stage, section = [], set(), None, None
entry_of_dropped = False
for line in lines:
    if m := re.match(r"^  (\S.*):$", line):
        stage, section = m.group(1), None
    elif m := re.match(r"^    (deps|outs|params):", line):
        section = m.group(1)
    if m := re.match(r"^    - path: (.*)$", line):
        entry_of_dropped = (section == "deps" and m.group(1).startswith(("ecgpipe", "stages/"))
                            and (stage, m.group(1)) not in listed)
        if entry_of_dropped:
            dropped.add((stage, m.group(1)))
    elif not line.startswith("      "):
        entry_of_dropped = False
    if not entry_of_dropped:
        kept.append(line)
open("dvc.lock", "w").write("\n".join(kept))
print(f"{len(changed)} code deps re-recorded in", len({s for s, _ in changed}), "stages:",
      sorted({p for _, p in changed}))
if dropped:
    print(f"{len(dropped)} code deps no longer in dvc.yaml dropped:", sorted({p for _, p in dropped}))
