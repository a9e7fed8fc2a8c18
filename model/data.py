"""Data sets as uint8 image tensors ``[N, C, H, W]`` (pixels 0..255), labels and class names.

- ``digits``: scikit-learn's 8x8 digits (shipped with the package, no download), pixels
  0..16 mapped to 0..255 by ``round(v * 255 / 16)`` (half up), one channel. The split is
  fixed: stratified 80/20 with ``random_state=0`` -> 1437 train / 360 test images.
- ``cifar10`` / ``cifar100``: the python pickle releases, read from a local folder
  (``<data_dir>/cifar-10-batches-py`` or ``<data_dir>/cifar-100-python``, or ``data_dir``
  itself); nothing is downloaded.
- ``fashion-mnist`` / ``mnist``: the four original IDX files (gzip or plain), read from
  ``data_dir`` or ``<data_dir>/<name>``; for fashion-mnist also from the folder of Debian's
  package ``dataset-fashion-mnist`` (:data:`FASHION_MNIST_DIR`). 28x28, one channel, the
  original 60,000 / 10,000 split. A file with a wrong magic, a size that does not match
  its header, an image count that differs from its label count or a label out of range
  is refused in one line that names the file.

Training batches can be augmented with :func:`augment` (random crop with zero padding,
horizontal flip; for CIFAR the usual padding 4 and flips).
"""

from __future__ import annotations

import gzip
import pickle
import zlib
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


#: Where Debian's ``dataset-fashion-mnist`` puts the four IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: IDX magic numbers: two zero bytes, the type code 0x08 (unsigned byte), the rank.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

_IDX = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(digit) for digit in range(10)],
}
_IDX_PREFIX = {"train": "train", "test": "t10k"}

#: The data sets :func:`load_dataset` reads.
KNOWN = ("digits", "cifar10", "cifar100", "fashion-mnist", "mnist")


def _unknown(name: str) -> StepvitError:
    return StepvitError(f"unknown data set {name!r} (known: {', '.join(KNOWN)})")


def image_shape(name: str) -> tuple[int, int, int]:
    """Return ``(C, H, W)`` of the images of data set ``name``."""
    if name == "digits":
        return (1, 8, 8)
    if name in _CIFAR:
        return (3, 32, 32)
    if name in _IDX:
        return (1, 28, 28)
    raise _unknown(name)


def num_classes(name: str) -> int:
    """Return the number of classes of data set ``name``."""
    if name == "cifar100":
        return 100
    if name in KNOWN:
        return 10
    raise _unknown(name)


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


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Return the uint8 array of the IDX file at ``path`` (gzip when its name ends .gz).

    Raises
    ------
    StepvitError
        If the file cannot be read, its magic is not ``magic``, or its size does not match
        the dimensions in its header; the message names the file.
    """
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except OSError as error:  # gzip.BadGzipFile and EOFError of a cut gzip stream too
        raise StepvitError(f"cannot read {path}: {error.strerror or error}") from None
    except (EOFError, zlib.error) as error:
        raise StepvitError(f"cannot read {path}: truncated or damaged gzip ({error})") from None
    rank = magic & 0xFF
    header_size = 4 + 4 * rank
    found = int.from_bytes(raw[:4], "big")
    if len(raw) >= 4 and found != magic:
        raise StepvitError(f"{path} is not an IDX file of rank {rank} (magic 0x{found:08x}, "
                           f"expected 0x{magic:08x})")
    if len(raw) < header_size:
        raise StepvitError(f"{path} is not an IDX file: {len(raw)} bytes, shorter than its "
                           f"header")
    shape = tuple(int.from_bytes(raw[4 + 4 * axis:8 + 4 * axis], "big") for axis in range(rank))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header_size != expected:
        raise StepvitError(f"{path} is truncated or padded: its header says "
                           f"{'x'.join(map(str, shape))} = {expected} bytes of data, "
                           f"it holds {len(raw) - header_size}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _idx_file(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (stem, f"{stem}.gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _load_idx(name: str, data_dir: Path, split: str
              ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    folders = [data_dir, data_dir / name]
    if name == "fashion-mnist":
        folders.append(FASHION_MNIST_DIR)
    prefix = _IDX_PREFIX[split]
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    images_path, labels_path = (_idx_file(folders, stem) for stem in stems)
    if images_path is None or labels_path is None:
        how = ("sudo apt-get install dataset-fashion-mnist (or make install), or put "
               if name == "fashion-mnist" else "put ")
        raise StepvitError(
            f"{name} not found in {', '.join(str(folder) for folder in folders)}: {how}"
            f"the four IDX files ({stems[0]}[.gz], {stems[1]}[.gz] and their "
            f"{'t10k' if split == 'train' else 'train'} twins) in data_dir")
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    _, height, width = image_shape(name)
    if images.shape[1:] != (height, width):
        raise StepvitError(f"{images_path} holds {images.shape[1]}x{images.shape[2]} images, "
                           f"{name} has {height}x{width}")
    if len(images) != len(labels):
        raise StepvitError(f"{labels_path} holds {len(labels)} labels for the "
                           f"{len(images)} images of {images_path}")
    class_names = _IDX[name]
    if len(labels) and int(labels.max()) >= len(class_names):
        raise StepvitError(f"{labels_path} holds label {int(labels.max())}, out of range for "
                           f"the {len(class_names)} classes of {name}")
    return (torch.from_numpy(images[:, None].copy()),
            torch.from_numpy(labels.astype(np.int64)), list(class_names))


def load_dataset(name: str, data_dir: str | Path, split: str
                 ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Return one split of a data set.

    Parameters
    ----------
    name : str
        One of :data:`KNOWN`.
    data_dir : str or Path
        Folder holding the CIFAR folders or the IDX files (unused for digits).
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
    if name in _IDX:
        return _load_idx(name, Path(data_dir), split)
    raise _unknown(name)


def hold_out(images: torch.Tensor, labels: torch.Tensor, fraction: float, *, seed: int
             ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Split a training set into ``(train, validation)``, ``fraction`` of it held out.

    The held-out images are drawn at random (one draw per ``seed``); the test split is
    never used for a choice, this is what choices are made on. ``fraction`` 0 holds out
    nothing (an empty validation split).

    Raises
    ------
    StepvitError
        If ``fraction`` is not in ``[0, 1)`` or would leave a split empty.
    """
    if not 0.0 <= fraction < 1.0:
        raise StepvitError(f"validation fraction must be in [0, 1), got {fraction}")
    count = round(len(labels) * fraction)
    if fraction and not 0 < count < len(labels):
        raise StepvitError(f"a validation fraction of {fraction} leaves {count} of "
                           f"{len(labels)} training images out: one split would be empty")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    held, kept = order[:count].sort().values, order[count:].sort().values
    return (images[kept], labels[kept]), (images[held], labels[held])


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
