"""Model-dependent bad inputs: nothing the config alone shows, so they fail when the compressors attach to the tiny
CNN, before the first optimizer step, with one message naming the key and the value; the run is recorded as failed."""

from __future__ import annotations

import json

import pytest
from bad_input_checks import (
    CNN,
    CNN_TEACHER,
    NO_LAYER,
    RANGE,
    assert_names,
    check_config,
    filled,
)
from helpers import compose_cfg

from compress_sweeps import train

# checks that need the model: they fail at attach, before the first optimizer step (digits + the tiny CNN)
ATTACH_TIME = {
    "pruner include matches nothing": (
        ["pruner=magnitude", "pruner.include=[attention]"],
        "pruner.include",
        ["attention"],
        "matches no layer",
    ),
    "pruner exclude leaves nothing": (["pruner=magnitude", "pruner.exclude=[.]"], "pruner.exclude", ["."], NO_LAYER),
    "one-shot N:M on 9 input columns": (
        ["pruner=sparsegpt", "pruner.pattern=2:4", "pruner.calibration_examples=8", "trainer.max_steps=2"],
        "pruner.pattern",
        "2:4",
        "does not fit layer 'features.0'",
    ),
    "one-shot pruning of a never-trained CNN at 0 steps": (
        ["pruner=wanda", "trainer=none"],
        "pruner.untrained",
        "error",
        "stops a 0-step run",
    ),
    "quantizer include matches nothing": (
        ["quantizer=q8bert", "quantizer.include=[query]"],
        "quantizer.include",
        ["query"],
        NO_LAYER,
    ),
    "pattern_lock on a dense model": (["pruner=pattern_lock"], "pruner", "pattern_lock", "finds nothing to lock"),
    "pattern_lock selects nothing": (
        ["pruner=pattern_lock", "pruner.include=[nothere]"],
        "pruner.include",
        ["nothere"],
        NO_LAYER,
    ),
    "N:M on 9 input columns": (
        ["pruner=magnitude", "pruner.pattern=2:4"],
        "pruner.pattern",
        "2:4",
        "does not fit layer 'features.0'",
    ),
    "NxM on 32 output rows": (
        ["pruner=magnitude", "pruner.pattern=3x1"],
        "pruner.pattern",
        "3x1",
        "does not fit layer 'features.0'",
    ),
    "head pattern on a CNN": (
        ["pruner=magnitude", "pruner.pattern=head"],
        "pruner.pattern",
        "head",
        "finds no attention block in this ConvNet",
    ),
    "distiller match names a missing student layer": (
        [
            "distiller=multilayer",
            *CNN_TEACHER,
            "distiller.matches=[{teacher_layer:features.0,student_layer:features.9,feature:hidden}]",
        ],
        "distiller.matches[0].student_layer",
        "features.9",
        "is not a layer",
    ),
    "distiller match block index on a CNN teacher": (
        ["distiller=multilayer", *CNN_TEACHER, "distiller.matches=[{teacher_layer:3,student_layer:fc,feature:hidden}]"],
        "distiller.matches[0].teacher_layer",
        3,
        RANGE,
    ),
    "distiller widths differ without projection": (
        [
            "distiller=multilayer",
            *CNN_TEACHER,
            "distiller.projection=false",
            "distiller.matches=[{teacher_layer:fc,student_layer:fc,feature:hidden}]",
        ],
        "distiller.matches[0]",
        "{teacher_layer: fc, student_layer: fc}",
        "pairs a student (128,) with a teacher (256,) feature",
    ),
    "teacher with another label set": (
        [
            "distiller=logits",
            "model@distiller.teachers.main.model=from_run",
            "distiller.teachers.main.model.folder={three_label_run}",
            "distiller.teachers.main.finetune=null",
        ],
        "distiller.teachers.main.model.folder",
        "{three_label_run}",
        "has another label set",
    ),
}


@pytest.mark.parametrize(("overrides", "key", "value", "problem"), list(ATTACH_TIME.values()), ids=list(ATTACH_TIME))
def test_model_dependent_bad_input_fails_at_attach(tmp_path, overrides, key, value, problem, run_folders):
    cfg = compose_cfg([*CNN, *filled(overrides, run_folders)], output_dir=tmp_path / "run")
    check_config(cfg)  # nothing wrong that the config alone shows
    with pytest.raises(Exception) as caught:
        train.run(cfg)
    assert_names(caught.value, key, filled(value, run_folders), problem)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "train/loss" not in results["metrics"]
