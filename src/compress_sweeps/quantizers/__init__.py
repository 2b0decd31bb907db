"""Quantizers: each config in conf/quantizer/ points at one of these hook-protocol classes."""

from compress_sweeps.quantizers.differentiable import DifferentiableQuantization
from compress_sweeps.quantizers.post_training import PostTrainingInt8
from compress_sweeps.quantizers.q8bert import Q8Bert
from compress_sweeps.quantizers.quantized_distillation import QuantizedDistillation

__all__ = ["DifferentiableQuantization", "PostTrainingInt8", "Q8Bert", "QuantizedDistillation"]
