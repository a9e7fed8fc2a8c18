"""Data sets as uint8 image tensors ``[N, C, H, W]`` (pixels 0..255), labels and class names.

- ``digits``: scikit-learn's 8x8 digits (shipped with the package, no download), pixels
  0..16 mapped to 0..255 by ``round(v * 255 / 16)`` (half up), one channel. The split is
  fixed: stratified 80/20 with ``random_state=0`` -> 1437 train / 360 test images.
- ``cifar10`` / ``cifar100``: the python pickle releases, read from a local folder
  (``<data_dir>/cifar-10-batches-py`` or ``<data_dir>/cifar-100-python``, or ``data_dir``
  itself); nothing is downloaded.

Training batches can be augmented with :func:`augment` (random crop with zero padding,
horizontal flip; for CIFAR the usual padding 4 and flips).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from stepvit.model.export.errors import StepvitError

#: Number of digits images held out for the test split.
DIGITS_TEST_FRACTION = 0.2

_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{index}" for index in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "names_key": b"label_names",
        "labels_key": b"labels",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "names_key": b"fine_label_names",
        "labels_key": b"fine_labels",
    },
}


def image_shape(name: str) -> tuple[int, int, int]:
    """Return ``(C, H, W)`` of the images of data set ``name``."""
    if name == "digits":
        return (1, 8, 8)
    if name in _CIFAR:
        return (3, 32, 32)
    raise StepvitError(f"unknown data set {name!r} (known: digits, cifar10, cifar100)")


def digits_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map scikit-learn digits pixels 0..16 to 0..255 by ``round(v * 255 / 16)``, half up."""
    return np.floor(np.asarray(values, dtype=np.float64) * 255.0 / 16.0 + 0.5).astype(np.uint8)


def _load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits_to_uint8(digits.images)[:, None, :, :]
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, digits.target, test_size=DIGITS_TEST_FRACTION, stratify=digits.target,
        random_state=0)
    if split == "train":
        images, labels = train_images, train_labels
    else:
        images, labels = test_images, test_labels
    class_names = [str(int(name)) for name in digits.target_names]
    return (torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels).long(),
            class_names)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as file:
            return pickle.load(file, encoding="bytes")
    except FileNotFoundError:
        raise StepvitError(f"missing {path}") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise StepvitError(f"cannot read {path}: {error}") from None


def _load_cifar(name: str, data_dir: Path, split: str
                ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    layout = _CIFAR[name]
    folder = data_dir / layout["folder"]
    if not folder.is_dir() and (data_dir / layout["meta"]).is_file():
        folder = data_dir
    if not folder.is_dir():
        raise StepvitError(
            f"{name} not found: put the python version of the data set (the folder "
            f"{layout['folder']}/ with {', '.join(layout['train'] + layout['test'])} and "
            f"{layout['meta']}) under {data_dir}/")
    meta = _unpickle(folder / layout["meta"])
    class_names = [label.decode() for label in meta[layout["names_key"]]]
    pixels, labels = [], []
    for batch_name in layout[split]:
        batch = _unpickle(folder / batch_name)
        try:
            pixels.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[layout["labels_key"]], dtype=np.int64))
        except (KeyError, ValueError) as error:
            raise StepvitError(f"{folder / batch_name} is not a {name} batch: {error}") from None
    return (torch.from_numpy(np.concatenate(pixels)), torch.from_numpy(np.concatenate(labels)),
            class_names)


def load_dataset(name: str, data_dir: str | Path, split: str
                 ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Return one split of a data set.

    Parameters
    ----------
    name : str
        ``"digits"``, ``"cifar10"`` or ``"cifar100"``.
    data_dir : str or Path
        Folder holding the CIFAR folders (unused for digits).
    split : str
        ``"train"`` or ``"test"``.

    Returns
    -------
    images : torch.Tensor
        uint8 ``[N, C, H, W]``, pixels 0..255.
    labels : torch.Tensor
        int64 ``[N]``.
    class_names : list of str
    """
    if split not in ("train", "test"):
        raise StepvitError(f"split must be 'train' or 'test', got {split!r}")
    if name == "digits":
        return _load_digits(split)
    if name in _CIFAR:
        return _load_cifar(name, Path(data_dir), split)
    raise StepvitError(f"unknown data set {name!r} (known: digits, cifar10, cifar100)")


def augment(images: torch.Tensor, generator: torch.Generator, *, padding: int = 4,
            flip: bool = True) -> torch.Tensor:
    """Return a random crop (zero padding ``padding``) and maybe flip of each image.

    Parameters
    ----------
    images : torch.Tensor
        ``[B, C, H, W]`` (any dtype; the result has the same).
    generator : torch.Generator
        Source of the crop offsets and flips, so a seed fixes the augmentation.
    padding : int
        Largest shift of a crop, in pixels.
    flip : bool
        Mirror half of the images, left to right.
    """
    batch, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator)
    flips = torch.rand(batch, generator=generator) < (0.5 if flip else 0.0)
    cropped = torch.stack([
        padded[index, :, top:top + height, left:left + width]
        for index, (top, left) in enumerate(offsets.tolist())
    ])
    cropped[flips] = cropped[flips].flip(-1)
    return cropped


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
            order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` batches, in ``order`` (indices) or in stored order."""
    indices = torch.arange(len(labels)) if order is None else order
    for start in range(0, len(indices), batch_size):
        chosen = indices[start:start + batch_size]
        yield images[chosen], labels[chosen]
