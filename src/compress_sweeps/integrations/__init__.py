"""Adapters that drive the hook protocol from other training loops (the Hugging Face `Trainer`)."""

from compress_sweeps.integrations.hf_trainer import CompressionCallback

__all__ = ["CompressionCallback"]
