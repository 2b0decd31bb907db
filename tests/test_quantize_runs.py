"""End-to-end quantized runs on tiny models: results.json reports the measured bits, size and int8 export, and
model.safetensors holds at most 2^bits levels per quantized tensor (per bucket where buckets are on)."""

from __future__ import annotations

import json

import pytest
from helpers import compose_cfg, tiny_text_overrides
from safetensors.torch import load_file

from compress_sweeps import train
from compress_sweeps.export import onnx as onnx_export
from compress_sweeps.export.onnx import OnnxModel
from compress_sweeps.weights.grid import group_rows

IMAGE_SMOKE = ["task=digits", "model=cnn", "trainer=smoke", "logger=none"]
# a post-training quantizer's spec: no promise about the saved weights, only the int8 model the export must build
NO_PROMISE = {"sparsity": [], "quantization": None, "keeps_zeros": False, "batch_keys": [], "structure": None}


def finished(tmp_path, overrides: list[str]) -> tuple[dict, dict]:
    train.run(compose_cfg(overrides, output_dir=tmp_path / "run"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed"
    return results, load_file(tmp_path / "run" / "model.safetensors")


def max_levels(tensor, bucket_size=None) -> int:
    return max(int(row.unique().numel()) for row in group_rows(tensor, bucket_size))


def test_q8bert_4_bit_text_run(tmp_path, tiny_bert, text_csvs):
    overrides = [
        *tiny_text_overrides(text_csvs, tiny_bert),
        "trainer=smoke",
        "logger=none",
        "quantizer=q8bert",
        "quantizer.bits=4",
        "export=torch",  # stores 4-bit codes exactly (ONNX Runtime re-quantizes them to max|w|/127)
    ]
    results, weights = finished(tmp_path, overrides)
    compression = results["compression"]
    assert compression["bits"] == 4
    linear = [name for name in compression["layer_bits"]]  # encoder Linear weights, all quantized by default
    assert linear and all(max_levels(weights[name]) <= 15 for name in linear)
    assert all(compression["layer_bits"][name] == 4 for name in linear)
    export = compression["int8_export"]
    assert export["exact_layers"] > 0 and export["requantized_layers"] == 0
    assert export["latency_ms_int8"] > 0
    assert export["eval/accuracy_fp32"] == results["metrics"]["eval/accuracy"]
    full_size = sum(t.numel() * t.element_size() for t in weights.values())
    assert compression["size_bytes"] < full_size


def test_q8bert_onnxruntime_export_in_a_text_run(tmp_path, tiny_bert, ragged_text_csvs, monkeypatch):
    monkeypatch.setattr(onnx_export, "_needs_reduced_range", lambda: False)  # full int8 range, as on a VNNI CPU
    overrides = [*tiny_text_overrides(ragged_text_csvs, tiny_bert), "trainer=smoke", "logger=none", "quantizer=q8bert"]
    # evaluation batches of 8 texts of 4 to 15 tokens: the ONNX graph runs batches of several widths
    results, _ = finished(tmp_path, [*overrides, "trainer.eval_batch_size=8", "trainer.eval_max_batches=null"])
    export = results["compression"]["int8_export"]
    assert export["backend"].startswith("ONNX Runtime") and export["file"] == "model.int8.onnx"
    timed = [entry["seq_len"] for key, entry in results["compression"]["latency"].items() if key.startswith("batch_")]
    assert 4 <= export["latency_seq_len"] <= 16 and timed and all(4 <= width <= 16 for width in timed)
    assert export["exact_layers"] > 0 and export["requantized_layers"] == 0  # 8-bit codes kept as trained
    assert export["latency_ratio"] == export["latency_ms_int8"] / export["latency_ms_fp32"]
    assert abs(export["accuracy_drop"]) <= 0.5  # a 2-step tiny model: only a sanity bound
    session = OnnxModel(tmp_path / "run" / "model.int8.onnx")  # the file stands on its own for deployment
    assert session.input_names == ["input_ids", "attention_mask", "token_type_ids"]


@pytest.mark.parametrize("bucket_size", [64, None])
def test_quantized_distillation_image_run(tmp_path, bucket_size):
    bucket = "null" if bucket_size is None else bucket_size
    overrides = [*IMAGE_SMOKE, "quantizer=quantized_distillation", "quantizer.bits=3"]
    overrides.append(f"quantizer.bucket_size={bucket}")
    results, weights = finished(tmp_path, overrides)
    layer_bits = results["compression"]["layer_bits"]
    quantized = [name for name, bits in layer_bits.items() if bits < 32]
    assert quantized and results["compression"]["bits"] == 3
    assert all(max_levels(weights[name], bucket_size) <= 8 for name in quantized)
    assert "features.0.weight" not in quantized  # the first layer stays in full precision (skip_first_last)


def test_differentiable_image_run(tmp_path):
    results, weights = finished(tmp_path, [*IMAGE_SMOKE, "quantizer=differentiable", "quantizer.bits=2"])
    layer_bits = results["compression"]["layer_bits"]
    quantized = [name for name, bits in layer_bits.items() if bits < 32]
    assert quantized and all(max_levels(weights[name]) <= 4 for name in quantized)
    assert "int8_export" not in results["compression"]  # learned points are no int8 grid: no export selected


def test_onnx_export_failure_falls_back_to_torch_and_keeps_the_run(tmp_path, monkeypatch):
    """An op the ONNX exporter lacks costs the run nothing: the torch int8 backend measures it, and says why."""
    from compress_sweeps.export import int8

    def unsupported(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator some_op\nmore detail")

    monkeypatch.setattr(int8, "to_int8_onnx", unsupported)
    results, _ = finished(tmp_path, [*IMAGE_SMOKE, "quantizer=q8bert"])
    export = results["compression"]["int8_export"]
    assert export["onnxruntime_failed"] == "RuntimeError: Unsupported: ONNX export of operator some_op"
    assert export["backend"].startswith("torch.ao") and export["latency_ms_int8"] > 0
    assert not (tmp_path / "run" / "model.int8.onnx").exists()


def test_28x28_cnn_run_exports_to_onnxruntime(tmp_path):
    """The CNN on 28x28 images pools 7x7 maps to 2x2 (overlapping windows), which the exporter alone cannot trace."""
    overrides = ["task=mnist5k", "model=cnn", "trainer=smoke", "logger=none", "quantizer=q8bert"]
    results, _ = finished(tmp_path, overrides)
    export = results["compression"]["int8_export"]
    assert "onnxruntime_failed" not in export and export["backend"].startswith("ONNX Runtime")
    assert (tmp_path / "run" / "model.int8.onnx").is_file()


def test_ptq_static_text_run_calibrates_on_the_one_shot_pruners_draw(tmp_path, tiny_bert, text_csvs, monkeypatch):
    """quantizer=ptq_static: no training-time quantization; export=onnxruntime_static calibrates on training examples
    drawn as the one-shot pruners draw them (tasks/sample.py) and reports the int8 model beside fp32."""
    from compress_sweeps.export import onnx_static

    drawn = []
    real = onnx_static.calibration_batches
    monkeypatch.setattr(onnx_static, "calibration_batches", lambda *args: drawn.append(args) or real(*args))
    overrides = [*tiny_text_overrides(text_csvs, tiny_bert), "trainer=smoke", "logger=none", "quantizer=ptq_static"]
    results, _ = finished(tmp_path, [*overrides, "export.calibration_examples=20", "seed=3"])
    export = results["compression"]["int8_export"]
    assert export["backend"].startswith("ONNX Runtime quantize_static (QDQ U8S8, minmax")
    assert export["file"] == "model.int8-static.onnx" and (tmp_path / "run" / "model.int8-static.onnx").is_file()
    assert export["calibration_examples"] == 20 and export["int8_weights"] == 2 * 6 + 2
    assert export["eval/accuracy_fp32"] == results["metrics"]["eval/accuracy"] and export["latency_ms_int8"] > 0
    [(train_set, keys, examples, batch_size, seed)] = drawn
    assert (len(train_set), examples, batch_size, seed) == (48, 20, 16, 3) and "input_ids" in keys
    assert results["compression"]["bits"] == 32  # the fp32 model is kept; the quantizer's int8 model is the export's
    assert results["compression"]["spec"] == [
        {**NO_PROMISE, "method": "PostTrainingInt8(static)", "int8_export": "static"}
    ]


def test_untimed_run_keeps_accuracy_and_leaves_the_timing_out(tmp_path):
    """measure_latency=false (what the planner's candidates run with): the int8 export is still evaluated and kept,
    but neither the fp32 model nor the export is timed, and no latency figure appears in results.json."""
    results, _ = finished(tmp_path, [*IMAGE_SMOKE, "quantizer=ptq_dynamic", "measure_latency=false"])
    compression, export = results["compression"], results["compression"]["int8_export"]
    assert not {"latency", "latency_ratio", "speedup"} & set(compression)
    assert not [key for key in export if key.startswith(("latency", "speedup"))]
    assert export["eval/accuracy_fp32"] == results["metrics"]["eval/accuracy"] and 0 <= export["eval/accuracy"] <= 1
    assert (tmp_path / "run" / "model.int8.onnx").is_file()
