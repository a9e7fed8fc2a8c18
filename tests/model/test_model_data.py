import pickle

import numpy as np
import pytest
import torch

from stepvit.model.data import augment, batches, digits_to_uint8, load_dataset
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
        load_dataset("mnist", ".", "train")
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
