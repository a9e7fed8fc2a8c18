import gzip
import pickle
import re

import numpy as np
import pytest
import torch

from stepvit.model import data as data_module
from stepvit.model.data import (
    augment,
    batches,
    digits_to_uint8,
    image_shape,
    load_dataset,
    num_classes,
)
from stepvit.model.export.errors import StepvitError


def test_digits_split_and_pixels():
    train_images, train_labels, class_names = load_dataset("digits", "unused", "train")
    test_images, test_labels, _ = load_dataset("digits", "unused", "test")
    assert train_images.shape == (1437, 1, 8, 8) and test_images.shape == (360, 1, 8, 8)
    assert train_images.dtype == torch.uint8 and train_labels.dtype == torch.int64
    assert class_names == [str(digit) for digit in range(10)]
    # stratified: every class in the test split, 36 or so of each
    assert torch.bincount(test_labels, minlength=10).min() >= 35
    assert int(test_images.max()) == 255
    again, _, _ = load_dataset("digits", "unused", "test")
    assert torch.equal(again, test_images)


def test_digits_pixel_mapping_rounds_half_up():
    assert digits_to_uint8(np.array([0, 1, 8, 15, 16])).tolist() == [0, 16, 128, 239, 255]


def write_fake_cifar10(root, images_per_batch=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    with (folder / "batches.meta").open("wb") as file:
        pickle.dump({b"label_names": names}, file)
    for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, images_per_batch))}
        with (folder / name).open("wb") as file:
            pickle.dump(batch, file)
    return folder


def test_cifar10_from_a_fake_folder(tmp_path):
    folder = write_fake_cifar10(tmp_path)
    images, labels, class_names = load_dataset("cifar10", tmp_path, "train")
    assert images.shape == (15, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (15,)
    assert class_names[0] == "airplane" and len(class_names) == 10
    with (folder / "data_batch_1").open("rb") as file:
        first = pickle.load(file, encoding="bytes")
    # channel-major rows of 3072 bytes: pixel (c=1, y=2, x=3) of the first image
    assert int(images[0, 1, 2, 3]) == int(first[b"data"][0, 1024 + 2 * 32 + 3])
    test_images, _, _ = load_dataset("cifar10", folder, "test")  # the folder itself works too
    assert test_images.shape == (3, 3, 32, 32)


def test_cifar100_from_a_fake_folder(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    with (folder / "meta").open("wb") as file:
        pickle.dump({b"fine_label_names": [f"class{index}".encode() for index in range(100)]},
                    file)
    for name, count in (("train", 4), ("test", 2)):
        with (folder / name).open("wb") as file:
            pickle.dump({b"data": np.zeros((count, 3072), dtype=np.uint8),
                         b"fine_labels": [99] * count}, file)
    images, labels, class_names = load_dataset("cifar100", tmp_path, "test")
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [99, 99]
    assert len(class_names) == 100


def test_missing_cifar_folder_says_what_to_put_where(tmp_path):
    with pytest.raises(StepvitError, match="cifar-10-batches-py/ .* under"):
        load_dataset("cifar10", tmp_path, "train")


def test_damaged_cifar_batch_is_one_clear_error(tmp_path):
    folder = write_fake_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(StepvitError, match="cannot read .*test_batch"):
        load_dataset("cifar10", tmp_path, "test")


def test_unknown_dataset_and_split():
    with pytest.raises(StepvitError, match="unknown data set"):
        load_dataset("imagenet", ".", "train")
    with pytest.raises(StepvitError, match="split"):
        load_dataset("digits", ".", "validation")


def test_augment_crops_and_flips_within_the_padding():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).reshape(2, 3, 32, 32)
    generator = torch.Generator().manual_seed(0)
    augmented = augment(images, generator)
    assert augmented.shape == images.shape
    assert not torch.equal(augmented, images)
    for original, result in zip(images, augmented):
        centre = result[:, 4:-4, 4:-4]
        # the centre of a crop within 4 pixels is a window of the image, maybe mirrored
        found = any(torch.equal(candidate[:, top:top + 24, left:left + 24], centre)
                    for candidate in (original, original.flip(-1))
                    for top in range(9) for left in range(9))
        assert found
    repeat = augment(images, torch.Generator().manual_seed(0))
    assert torch.equal(repeat, augmented)


def test_batches_cover_every_image_once():
    images = torch.arange(10).reshape(10, 1, 1, 1)
    labels = torch.arange(10)
    seen = torch.cat([batch_labels for _, batch_labels in batches(images, labels, 4,
                                                                  torch.randperm(10))])
    assert sorted(seen.tolist()) == list(range(10))


def idx_bytes(magic, shape, data):
    """Return an IDX file: big-endian magic, dimensions, then the uint8 data."""
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in shape)
    return header + np.asarray(data, dtype=np.uint8).tobytes()


def write_fake_idx(folder, images_per_split=(5, 3), compress=True, labels=None):
    """Write the four IDX files of a tiny 28x28 data set into ``folder``; return the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, count in zip(("train", "t10k"), images_per_split):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        split_labels = rng.integers(0, 10, count) if labels is None else labels[:count]
        arrays[prefix] = (images, split_labels)
        for kind, magic, array in (("images-idx3", 0x803, images),
                                   ("labels-idx1", 0x801, split_labels)):
            payload = idx_bytes(magic, array.shape, array)
            name = f"{prefix}-{kind}-ubyte"
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_read_gzip_or_plain(tmp_path, compress):
    arrays = write_fake_idx(tmp_path, compress=compress)
    images, labels, class_names = load_dataset("mnist", tmp_path, "train")
    assert images.shape == (5, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    assert np.array_equal(images[:, 0].numpy(), arrays["train"][0])
    assert labels.tolist() == arrays["train"][1].tolist()
    test_images, _, _ = load_dataset("mnist", tmp_path, "test")
    assert test_images.shape == (3, 1, 28, 28)
    assert class_names == [str(digit) for digit in range(10)]


def test_fashion_mnist_reads_a_subfolder_named_after_it(tmp_path):
    write_fake_idx(tmp_path / "fashion-mnist")
    _, _, class_names = load_dataset("fashion-mnist", tmp_path, "test")
    assert class_names[0] == "T-shirt/top" and class_names[-1] == "Ankle boot"
    assert image_shape("fashion-mnist") == (1, 28, 28) and num_classes("fashion-mnist") == 10


def test_missing_idx_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    with pytest.raises(StepvitError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path, "train")
    with pytest.raises(StepvitError, match=r"mnist not found in .*train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path, "train")


def corrupt(folder, name, payload):
    (folder / f"{name}.gz").unlink(missing_ok=True)
    (folder / name).write_bytes(payload)
    return str(folder / name)


def test_idx_wrong_magic_is_refused_naming_the_file(tmp_path):
    write_fake_idx(tmp_path)
    # labels where images belong: magic 0x801 in the images file
    path = corrupt(tmp_path, "train-images-idx3-ubyte", idx_bytes(0x801, (5,), range(5)))
    with pytest.raises(StepvitError, match=re.escape(
            f"{path} is not an IDX file of rank 3 (magic 0x00000801, expected 0x00000803)")):
        load_dataset("mnist", tmp_path, "train")


def test_idx_truncated_file_is_refused_naming_the_file(tmp_path):
    write_fake_idx(tmp_path)
    whole = idx_bytes(0x803, (5, 28, 28), np.zeros((5, 28, 28)))
    path = corrupt(tmp_path, "train-images-idx3-ubyte", whole[:-1])
    with pytest.raises(StepvitError, match=re.escape(
            f"{path} is truncated or padded: its header says 5x28x28 = 3920 bytes of data, "
            "it holds 3919")):
        load_dataset("mnist", tmp_path, "train")
    path = corrupt(tmp_path, "t10k-labels-idx1-ubyte", b"\0\0\x08")
    with pytest.raises(StepvitError, match=re.escape(f"{path} is not an IDX file: 3 bytes")):
        load_dataset("mnist", tmp_path, "test")


def test_idx_cut_gzip_is_refused_naming_the_file(tmp_path):
    write_fake_idx(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(StepvitError, match=re.escape(f"cannot read {path}: ")):
        load_dataset("mnist", tmp_path, "train")


def test_idx_count_mismatch_is_refused_naming_the_labels(tmp_path):
    write_fake_idx(tmp_path)
    path = corrupt(tmp_path, "train-labels-idx1-ubyte", idx_bytes(0x801, (4,), range(4)))
    with pytest.raises(StepvitError, match=re.escape(
            f"{path} holds 4 labels for the 5 images of ")):
        load_dataset("mnist", tmp_path, "train")


def test_idx_label_out_of_range_is_refused_naming_the_labels(tmp_path):
    write_fake_idx(tmp_path)
    path = corrupt(tmp_path, "t10k-labels-idx1-ubyte", idx_bytes(0x801, (3,), [0, 10, 9]))
    with pytest.raises(StepvitError, match=re.escape(
            f"{path} holds label 10, out of range for the 10 classes of mnist")):
        load_dataset("mnist", tmp_path, "test")
    path = corrupt(tmp_path, "t10k-labels-idx1-ubyte", idx_bytes(0x801, (3,), [0, 9, 9]))
    load_dataset("mnist", tmp_path, "test")  # the top label itself is fine


def test_idx_wrong_image_size_is_refused(tmp_path):
    write_fake_idx(tmp_path)
    path = corrupt(tmp_path, "t10k-images-idx3-ubyte",
                   idx_bytes(0x803, (3, 8, 8), np.zeros((3, 8, 8))))
    with pytest.raises(StepvitError, match=re.escape(f"{path} holds 8x8 images, mnist has 28x28")):
        load_dataset("mnist", tmp_path, "test")


def test_fashion_mnist_falls_back_to_the_debian_folder(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    arrays = write_fake_idx(debian)
    monkeypatch.setattr(data_module, "FASHION_MNIST_DIR", debian)
    images, _, _ = load_dataset("fashion-mnist", tmp_path / "data", "train")
    assert np.array_equal(images[:, 0].numpy(), arrays["train"][0])
    with pytest.raises(StepvitError, match="mnist not found"):  # mnist has no such folder
        load_dataset("mnist", tmp_path / "data", "train")
