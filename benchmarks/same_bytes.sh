#!/bin/bash
# Behaviour frozen? Runs the train, evaluate and report stages of one code checkout on data stages
# already made (dvc repro chunk signals), outside DVC, into OUT; run it for the code before and after
# a change, on one machine, then compare the two OUTs:
#   benchmarks/same_bytes.sh /tmp/old params.yaml /tmp/old/data /tmp/out-old
#   benchmarks/same_bytes.sh /tmp/new params.yaml /tmp/old/data /tmp/out-new
#   benchmarks/same_bytes.sh --compare /tmp/out-old /tmp/out-new
# Every output file is compared byte for byte but those that hold a run's identity or timing
# (speed.json, mlflow_run.json, MLflow's store and artifacts, logs), the predictors (a copy of the code,
# MLflow's uuid and time), and in the report the examples/s column and the champion's run id.
# A params file with fewer epochs checks the code path of slow experiments in minutes.
set -euo pipefail
if [ "$1" = "--compare" ]; then
  exec ${PYTHON:-python} - "$2" "$3" <<'PY'
import io, re, sys

import pandas as pd
from pathlib import Path
a, b = map(Path, sys.argv[1:])
# a run's identity and timing: excluded, or (in the report) masked
skip = re.compile(r"(^|/)(speed\.json|mlflow_run\.json|mlflow\.db.*|[^/]*\.log)$|^(predictors|mlartifacts|mlruns)/")
mask = {"reports/results.md": (r"\| [0-9,]+ \|\n", "| X |\n"),
        "reports/champion.json": (r'"run_id": "[0-9a-f]+"', '"run_id": X')}
files = sorted(str(f.relative_to(a)) for f in a.rglob("*") if f.is_file() and not skip.search(str(f.relative_to(a))))
differ = []
for f in files:
    x, y = (a / f).read_bytes(), (b / f).read_bytes() if (b / f).is_file() else None
    if f in mask and y is not None:  # the examples/s column (the last) and the run id: a rerun's own
        pattern, to = mask[f]
        x, y = (re.sub(pattern.encode(), to.encode(), v) for v in (x, y))
    if f == "reports/results.csv" and y is not None:
        x, y = (pd.read_csv(io.BytesIO(v)).drop(columns="train_examples_per_s").to_csv().encode() for v in (x, y))
    if x != y:
        differ.append(f)
print(f"{len(files)} files compared (reports/results.* without examples/s, champion.json without the run id)")
print("\n".join(f"differs: {f}" for f in differ) or "all byte-identical")
sys.exit(1 if differ else 0)
PY
fi
CODE=$(realpath "$1"); PARAMS=$(realpath "$2"); DATA=$(realpath "$3"); OUT=$(realpath -m "$4")
mkdir -p "$OUT"
export PYTHONPATH=$CODE MLFLOW_TRACKING_URI=sqlite:///$OUT/mlflow.db
PY=${PYTHON:-python}
cd "$CODE"
EXPERIMENTS=$($PY -c "import sys, yaml; print(' '.join(yaml.safe_load(open(sys.argv[1]))['experiments']))" "$PARAMS")
for E in $EXPERIMENTS; do
  echo "train $E $(date +%T)"
  $PY stages/train.py --params "$PARAMS" --experiment "$E" --spectrogram "$DATA/spectrogram" --signals "$DATA/signals.pt" \
    --balance "$DATA/balance.json" --chunks "$DATA/chunks" --out "$OUT/models/$E" --metrics "$OUT/metrics/$E/train.json" \
    --history "$OUT/plots/history/$E.csv" --speed "$OUT/metrics/$E/speed.json" > "$OUT/train-$E.log" 2>&1
done
for E in $EXPERIMENTS; do
  echo "evaluate $E $(date +%T)"
  $PY stages/evaluate.py --params "$PARAMS" --experiment "$E" --records "$DATA/records" --spectrogram "$DATA/spectrogram" \
    --chunks "$DATA/chunks" --model "$OUT/models/$E" --metrics "$OUT/metrics/$E/eval.json" --plots "$OUT/plots" \
    --predictor "$OUT/predictors/$E" > "$OUT/eval-$E.log" 2>&1
done
echo "report $(date +%T)"
$PY stages/report.py --params "$PARAMS" --metrics "$OUT/metrics" --models "$OUT/models" --out "$OUT/reports" \
  --plots "$OUT/plots" --chunks "$DATA/chunks" --spectrogram "$DATA/spectrogram" --records "$DATA/records" > "$OUT/report.log" 2>&1
echo "done $(date +%T)"
