"""Models and tasks declare what they are beside their builders (compress_sweeps/kinds.py): the pre-launch pass
matches a run's models against its task by those declarations alone, a new builder included."""

from __future__ import annotations

import pytest
from helpers import compose_cfg
from omegaconf import OmegaConf, open_dict
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.kinds import Kind, builds, kind_of
from compress_sweeps.run.nodes import check_data


@builds("model", Kind("images", family="mlp"))
def image_mlp(num_labels: int, width: int = 8) -> nn.Module:
    """A model builder from outside the package, declaring what it takes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_labels))


def undeclared_mlp(num_labels: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_labels))


def with_model(overrides: list[str], target: str):
    cfg = compose_cfg(overrides)
    with open_dict(cfg):
        cfg.model = OmegaConf.create({"_target_": target})
    return cfg


def test_a_new_declared_builder_is_matched_against_the_task():
    assert check_data(with_model(["task=digits"], f"{__name__}.image_mlp")) == []
    with pytest.raises(ConfigError) as caught:
        check_data(with_model(["task=bbc_news"], f"{__name__}.image_mlp"))
    assert (caught.value.key, caught.value.problem) == ("model", "takes images")
    assert "must take text and predict classes" in str(caught.value) and "minilm" in str(caught.value)


def test_an_undeclared_builder_is_said_not_to_be_matched():
    warnings = check_data(with_model(["task=digits"], f"{__name__}.undeclared_mlp"))
    assert len(warnings) == 1 and "model._target_=test_kinds.undeclared_mlp declares no kind" in warnings[0]


def test_wrappers_have_the_kind_of_what_they_wrap():
    cfg = compose_cfg(["task=digits", "model=cnn_teacher", "distiller=dense_cnn"])
    assert kind_of(cfg.model) == Kind("images", "classes", family="cnn")
    finetuned = OmegaConf.create({"_target_": "compress_sweeps.models.finetuned", "model": cfg.model})
    assert kind_of(finetuned) == kind_of(cfg.model)
    assert kind_of(OmegaConf.create({"_target_": "compress_sweeps.models.from_run"})) is None  # no folder yet


def test_a_kind_names_what_does_not_fit():
    assert Kind("text").mismatch(Kind("images")) == "takes text"
    assert Kind("text", family="encoder").mismatch(Kind("text")) is None
    with pytest.raises(TypeError, match="exactly one of kind= and like="):
        builds("model")
