"""Distillers: each config in conf/distiller/ points at one of these; all follow the hook protocol."""

from compress_sweeps.distillers.logits import LogitsDistiller
from compress_sweeps.distillers.multilayer import LayerMatch, MultiLayerDistiller
from compress_sweeps.distillers.simkd import SimKD
from compress_sweeps.distillers.teacher import Teacher

__all__ = ["LayerMatch", "LogitsDistiller", "MultiLayerDistiller", "SimKD", "Teacher"]
