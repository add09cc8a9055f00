"""The ship stage's choice of what to ship, and `ecgpipe predict` without --model."""
import json

import pytest

from ecgpipe.core.errors import StoreError
from ecgpipe.pipeline.ship import SHIPPED, served_source, shipped_model

WORKSPACE = {"experiment": "raw_resnet-robust_crop", "run_id": "w1", "how": "chosen by report.order"}
FAILED = {"serves": "ecgpipe-af", "model": "models:/ecgpipe-af@champion", "experiment": "raw_resnet-robust_crop",
          "why": "the task's champion did not pass its gate"}
PASSED = {"serves": "ecgpipe-af", "experiment": "raw_resnet-robust_crop", "run_id": "t1", "version": 2,
          "why": "the task's champion passed its gate: chosen by report.order"}


def test_the_notebooks_champion_is_shipped_until_a_task_registers_its_own():
    shipped, base = served_source("ecgpipe-af", WORKSPACE, {"four_class": FAILED})
    assert (shipped.task, shipped.run_id, str(base)) == (None, "w1", ".")
    assert "no task's champion passed its gate" in shipped.why
    shipped, base = served_source("ecgpipe-af", WORKSPACE, {"af_vs_rest": FAILED, "four_class": PASSED})
    assert (shipped.task, shipped.run_id, str(base)) == ("four_class", "t1", "tasks/four_class")
    # a task that registers another model does not replace the detector
    other = dict(PASSED, serves="ecgpipe-rhythm")
    assert served_source("ecgpipe-af", WORKSPACE, {"four_class": other})[0].task is None
    assert served_source("ecgpipe-af", {"experiment": None, "how": "none passed"}, {}) is None


def test_predict_without_a_shipped_model_says_why(tmp_path):
    with pytest.raises(StoreError, match=r"shipped.json: not found; expected the ship stage's output"):
        shipped_model(tmp_path)
    (tmp_path / SHIPPED).write_text(json.dumps({"registered_model": "ecgpipe-af", "experiment": None,
                                                "why": "no champion: no experiment passed the gate"}))
    with pytest.raises(StoreError, match=r"nothing is shipped \(no champion: no experiment passed the gate\); give a "
                                         r"model with --model"):
        shipped_model(tmp_path)
