"""Per-batch padding and length-grouped batches: padded as the tokenizer pads, grouped as the HF Trainer groups,
resumable, and the same predictions, activation ranges and measurements as with every example padded to max_length."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import text_rows
from transformers import AutoTokenizer, DataCollatorWithPadding
from transformers.trainer_pt_utils import get_length_grouped_indices

from compress_sweeps import batching, distributed
from compress_sweeps.batching import PadCollator, dataset_digest, length_grouped_order
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.models import pretrained_classifier
from compress_sweeps.quantizers import Q8Bert
from compress_sweeps.run import measure
from compress_sweeps.tasks import text_files
from compress_sweeps.tasks.images import TensorDictDataset
from compress_sweeps.tasks.text import TokenizedSplit
from compress_sweeps.trainer import Trainer

MAX_LENGTH = 16


@pytest.fixture
def ragged(tiny_bert, ragged_text_csvs, tmp_path):
    """Train and validation splits of 4 to 15 tokens per example, and the tiny BERT's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    task = text_files(*map(str, ragged_text_csvs), max_length=MAX_LENGTH, cache_dir=str(tmp_path / "cache"))
    return (*task.datasets(tokenizer), tokenizer, task.input_keys)


def fixed(split: TokenizedSplit, tokenizer) -> TokenizedSplit:
    """The same rows, every batch padded to max_length: how text tasks were batched before per-batch padding."""
    keys = list(split.collate.pad_values)
    return TokenizedSplit(split.rows, PadCollator.for_tokenizer(tokenizer, keys, width=MAX_LENGTH))


def rows_of(tokenizer, texts: list[str]) -> list[dict[str, torch.Tensor]]:
    encoded = [{k: torch.tensor(v) for k, v in tokenizer(text).items()} for text in texts]
    return [row | {"labels": torch.tensor(i % 3), "idx": torch.tensor(i)} for i, row in enumerate(encoded)]


@pytest.mark.parametrize(("side", "multiple_of", "width"), [("right", None, None), ("left", 8, None), ("right", 1, 16)])
def test_pad_collator_pads_as_the_tokenizer_does(tiny_bert, side, multiple_of, width):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert, padding_side=side)
    tokenizer.pad_token = "[MASK]"  # a pad id other than 0: the collator must take the tokenizer's
    rows = rows_of(tokenizer, [row["text"] for row in text_rows(6, words=(2, 13))])
    keys = ["input_ids", "token_type_ids", "attention_mask"]
    ours = PadCollator.for_tokenizer(tokenizer, keys, multiple_of=multiple_of, width=width)(rows)
    padding = {"padding": "max_length", "max_length": width} if width else {}
    theirs = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple_of, **padding)(rows)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    longest, multiple = max(len(row["input_ids"]) for row in rows), multiple_of or 1
    assert ours["input_ids"].shape[1] == (width or -(-longest // multiple) * multiple)  # 15 -> 16 for a multiple of 8
    with pytest.raises(ValueError, match="multiple_of"):
        PadCollator({"input_ids": 0}, multiple_of=0)


def test_length_grouped_order_is_the_hf_trainers_and_pads_less():
    lengths = torch.randint(3, 60, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    for batch_size in (4, 16, 300):  # 300: fewer than 4 megabatches of 50 batches
        ours = length_grouped_order(lengths, batch_size, torch.Generator().manual_seed(7))
        theirs = get_length_grouped_indices(lengths, batch_size, generator=torch.Generator().manual_seed(7))
        assert ours == theirs and sorted(ours) == list(range(1000))

    def padded_tokens(order: list[int]) -> int:
        return sum(16 * max(lengths[i] for i in order[s : s + 16]) for s in range(0, len(order), 16))

    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(7)).tolist()
    grouped = length_grouped_order(lengths, 16, torch.Generator().manual_seed(7))
    assert padded_tokens(grouped) < 0.7 * padded_tokens(shuffled)


def test_ranks_take_their_shares_of_one_length_grouped_order(monkeypatch):
    """Under torchrun every rank draws the same order from its (equally seeded) generator and takes its share."""

    class Texts:
        lengths = [3 + (7 * i) % 40 for i in range(400)]

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    samplers = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        samplers.append(batching.length_grouped(Texts(), 4, torch.Generator().manual_seed(5)))
    shards = [list(sampler) for sampler in samplers]
    whole = length_grouped_order(Texts.lengths, 8, torch.Generator().manual_seed(5))  # grouped for 4 x 2 ranks
    assert shards == [whole[0::2], whole[1::2]] and [len(s) for s in samplers] == [200, 200]
    assert sorted(shards[0] + shards[1]) == list(range(400))  # disjoint, and together every example once
    # the two ranks' batches of one step hold examples of similar lengths (of 3 to 42): megabatches of 96 examples
    # (12 steps of 2 x 4), the last one of 16 examples only
    for start in range(0, 192, 4):
        both = [Texts.lengths[i] for shard in shards for i in shard[start : start + 4]]
        assert max(both) - min(both) <= 8, (start, both)


@pytest.mark.parametrize("group_by_length", [False, True])
def test_training_batches_resume_exactly_and_group_by_length(ragged, group_by_length):
    train, _, _, _ = ragged
    trainer = Trainer(max_steps=30, batch_size=4, group_by_length=group_by_length, progress=False, device="cpu")
    batches = trainer._batches(train, torch.Generator().manual_seed(0))
    first = [next(batches) for _ in range(15)]  # 12 batches per epoch: into the second epoch
    state = copy.deepcopy(batches.state_dict())
    rest = [next(batches) for _ in range(10)]
    resumed = trainer._batches(train, torch.Generator().manual_seed(99))
    resumed.load_state_dict(state)
    for expected, batch in zip(rest, [next(resumed) for _ in range(10)], strict=True):
        assert all(torch.equal(expected[key], batch[key]) for key in expected)
    epoch = first[:12]
    assert sorted(torch.cat([b["idx"] for b in epoch]).tolist()) == list(range(len(train)))
    for batch in first:  # padded to the batch's longest example, not to max_length
        assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())
    widths = sum(b["input_ids"].shape[1] for b in epoch)
    ungrouped = Trainer(max_steps=30, batch_size=4, progress=False, device="cpu")
    plain = ungrouped._batches(train, torch.Generator().manual_seed(0))
    plain_widths = sum(next(plain)["input_ids"].shape[1] for _ in range(12))
    assert (widths < plain_widths) if group_by_length else (widths == plain_widths)


def test_group_by_length_is_validated():
    with pytest.raises(ConfigError, match="trainer.group_by_length"):
        Trainer(group_by_length="yes")
    images = TensorDictDataset(torch.zeros(8, 1, 4, 4), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ConfigError, match="trainer.group_by_length=true"):
        Trainer(max_steps=1, group_by_length=True, device="cpu")._batches(images, torch.Generator())


def test_evaluation_gives_the_same_predictions_as_with_fixed_padding(ragged, tiny_bert):
    _, validation, tokenizer, keys = ragged
    torch.manual_seed(0)
    model = pretrained_classifier(str(tiny_bert), 3).eval()
    logits = {}
    for name, split in (("dynamic", validation), ("fixed", fixed(validation, tokenizer))):
        with torch.no_grad():
            batches = list(batching.loader(split, 8))
            logits[name] = torch.cat([model(**{k: b[k] for k in keys if k in b}).logits for b in batches])
        assert max(b["input_ids"].shape[1] for b in batches) == (MAX_LENGTH if name == "fixed" else max(split.lengths))
    torch.testing.assert_close(logits["dynamic"], logits["fixed"], rtol=1e-4, atol=1e-4)
    assert torch.equal(logits["dynamic"].argmax(-1), logits["fixed"].argmax(-1))
    trainer = Trainer(max_steps=1, eval_batch_size=8, device="cpu")
    dynamic = trainer.evaluate(model, validation, keys)
    padded = trainer.evaluate(model, fixed(validation, tokenizer), keys)
    assert dynamic["eval/accuracy"] == padded["eval/accuracy"]
    assert dynamic["eval/loss"] == pytest.approx(padded["eval/loss"], rel=1e-4)


def test_q8bert_ranges_are_no_wider_than_with_fixed_padding(ragged, tiny_bert):
    """Padding positions count in the activation ranges: per-batch padding keeps a subset of them, unchanged."""
    train, _, tokenizer, keys = ragged
    torch.manual_seed(0)
    base = pretrained_classifier(str(tiny_bert), 3, dropout=0.0)
    ranges = {}
    for name, split in (("dynamic", train), ("fixed", fixed(train, tokenizer))):
        model, quantizer = copy.deepcopy(base).train(), Q8Bert()
        quantizer.attach(model, RunContext(total_steps=1, num_labels=3, device=torch.device("cpu")))
        batch = next(iter(batching.loader(split, 16)))
        model(**{k: batch[k] for k in keys if k in batch})
        ranges[name] = {layer: (float(o.low), float(o.high)) for layer, o in quantizer.observers.items()}
    for layer, (low, high) in ranges["dynamic"].items():  # up to float noise of kernels for other widths
        fixed_low, fixed_high = ranges["fixed"][layer]
        assert low >= fixed_low - 1e-4 * abs(fixed_low) and high <= fixed_high + 1e-4 * abs(fixed_high), layer


def test_dataset_digest_hashes_ragged_rows(ragged):
    train, _, _, keys = ragged
    rows = [train[i] for i in range(len(train))]
    assert dataset_digest(train, keys) == dataset_digest(rows, keys)  # the same rows however they are held
    shifted = [{"input_ids": torch.tensor(ids), "idx": torch.tensor(i)} for i, ids in enumerate([[1, 2], [3]])]
    other = [{"input_ids": torch.tensor(ids), "idx": torch.tensor(i)} for i, ids in enumerate([[1], [2, 3]])]
    assert dataset_digest(shifted, ["input_ids"]) != dataset_digest(other, ["input_ids"])


def test_latency_states_the_sequence_length_it_was_measured_at(ragged, tiny_bert):
    """Batch 1 is the first eval example unpadded; the larger batch is padded to its longest example."""
    _, validation, _, keys = ragged
    model, dense = (pretrained_classifier(str(tiny_bert), 3).eval() for _ in range(2))
    latency = measure.measure(model, validation, keys, reference=dense)["latency"]
    timed = [entry for key, entry in latency.items() if key.startswith("batch_")]
    first, *_, largest = sorted(timed, key=lambda entry: entry["batch"])
    assert first["batch"] == 1 and first["seq_len"] == validation.lengths[0] < MAX_LENGTH
    assert largest["seq_len"] == max(validation.lengths[: largest["batch"]]) < MAX_LENGTH
    assert first["model_ms"] > 0 and first["dense_ms"] > 0
