"""Each loader on tiny files in the real formats, the real CIFAR-10 folder, and every bad-input error."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from conftest import CIFAR_FOLDER, needs_real_cifar, write_imagefolder, write_mini_imagenet_cache
from PIL import Image

from haet.data import DataError, load_split
from haet.data.subsets import SubsetSpec, make_manifest


def pil_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


# --- digits -------------------------------------------------------------------------------------------------


def test_digits_is_32x32_rgb_with_a_fixed_split():
    train, test = load_split("digits", "train"), load_split("digits", "test")
    images = train.images()
    assert images.shape == (1297, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images[..., 0], images[..., 2])  # gray replicated to RGB
    assert images.max() == 255 and images.min() == 0
    assert len(test) == 500 and np.bincount(test.labels).tolist() == [50] * 10
    assert train.class_names == tuple("0123456789")


def test_digits_upscale_keeps_the_digit():
    from sklearn.datasets import load_digits

    first = load_split("digits", "train").images([0])[0, :, :, 0].astype(float)
    original = load_digits().images[0]
    # A block average of the 32x32 image recovers the 8x8 digit's shape.
    pooled = first.reshape(8, 4, 8, 4).mean(axis=(1, 3))
    assert np.corrcoef(pooled.ravel(), original.ravel())[0, 1] > 0.95


def test_digits_are_sklearns_digits_in_its_order_without_importing_sklearn():
    from sklearn.datasets import load_digits

    from haet.data.digits import _digits_8x8

    bunch, (images, labels) = load_digits(), _digits_8x8()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)
    probe = "import sys; from haet.data import load_split; load_split('digits', 'train')"
    probe += "; print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


# --- cifar10 python batches ---------------------------------------------------------------------------------


def test_cifar10_batches_load_pixel_exact(cifar_batches):
    root, images, labels = cifar_batches
    train = load_split("cifar10", "train", str(root))
    assert np.array_equal(train.images(), images)  # channel planes turned into H x W x 3 correctly
    assert np.array_equal(train.labels, labels)
    assert train.class_names[0] == "airplane" and len(load_split("cifar10", "test", str(root))) == 20
    # root may also name the batch folder itself
    assert len(load_split("cifar10", "train", str(root / "cifar-10-batches-py"))) == 100


def test_cifar10_missing_folder_says_what_to_put_there(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz.*download: true"):
        load_split("cifar10", "train", str(tmp_path / "nothing"))


def test_cifar10_truncated_batch_is_named(cifar_batches):
    root = cifar_batches[0]
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"data_batch_3: corrupt or truncated"):
        load_split("cifar10", "train", str(root))


def test_cifar10_batch_of_wrong_shape_is_named(cifar_batches):
    root = cifar_batches[0]
    batch = root / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match=r"test_batch: malformed CIFAR-10 batch"):
        load_split("cifar10", "test", str(root))


def test_pickles_that_would_run_code_are_refused(cifar_batches):
    root = cifar_batches[0]

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(DataError, match=r"refusing to load builtins.print"):
        load_split("cifar10", "test", str(root))


# --- imagefolder --------------------------------------------------------------------------------------------


def test_imagefolder_reads_classes_in_sorted_order(tmp_path):
    written = write_imagefolder(tmp_path, {"cat": 3, "ant": 2})
    write_imagefolder(tmp_path, {"cat": 1, "ant": 1}, split="test")
    train = load_split("imagefolder", "train", str(tmp_path))
    assert train.class_names == ("ant", "cat") and train.labels.tolist() == [0, 0, 1, 1, 1]
    assert np.array_equal(train.images(), np.concatenate([written["ant"], written["cat"]]))  # PNG is lossless


def test_imagefolder_resizes_when_asked_and_refuses_mixed_sizes_otherwise(tmp_path):
    write_imagefolder(tmp_path, {"a": 2}, size=32)
    write_imagefolder(tmp_path / "more", {"a": 1}, size=40)
    (tmp_path / "more" / "train" / "a" / "0000.png").rename(tmp_path / "train" / "a" / "9999.png")
    with pytest.raises(DataError, match=r"9999.png: image is 40x40.*set the dataset option size"):
        load_split("imagefolder", "train", str(tmp_path)).images()
    assert load_split("imagefolder", "train", str(tmp_path), size=16).images().shape == (3, 16, 16, 3)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing split folder.*<split>/<class>/<image>"):
        load_split("imagefolder", "train", str(tmp_path))
    write_imagefolder(tmp_path, {"a": 1, "b": 1})
    write_imagefolder(tmp_path, {"a": 1, "c": 1}, split="test")
    with pytest.raises(
        DataError,
        match=r"class folders differ between splits: only in train/: \['b'\]; only in test/: \['c'\]",
    ):
        load_split("imagefolder", "train", str(tmp_path))
    (tmp_path / "test" / "b").mkdir()
    (tmp_path / "train" / "c").mkdir()
    with pytest.raises(DataError, match=r"c: class folder holds no"):
        load_split("imagefolder", "train", str(tmp_path))


def test_a_file_among_the_class_folders_is_named_not_ignored(tmp_path):
    write_imagefolder(tmp_path, {"a": 1, "b": 1})
    write_imagefolder(tmp_path, {"a": 1, "b": 1}, split="test")
    (tmp_path / "train" / "c").write_text("a class that is a file")
    with pytest.raises(DataError, match=r"train/c is a file where ImageFolder expects only class folders"):
        load_split("imagefolder", "train", str(tmp_path))


def test_truncated_jpeg_is_named(tmp_path):
    write_imagefolder(tmp_path, {"a": 2}, suffix=".jpg")
    broken = tmp_path / "train" / "a" / "0001.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    split = load_split("imagefolder", "train", str(tmp_path))
    with pytest.raises(DataError, match=r"0001.jpg: cannot decode image"):
        split.images()


# --- mini-imagenet ------------------------------------------------------------------------------------------

CLASS_IDS = ["n03017168", "n01532829", "n02108551", "n01749939"]  # deliberately not in sorted order


def test_mini_imagenet_cache_follows_the_haet_protocol(tmp_path):
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    image_data, class_dict = write_mini_imagenet_cache(path, CLASS_IDS, per_class=12)
    options = {"num_classes": 3, "train_per_class": 8, "test_per_class": 3}
    train = load_split("mini-imagenet", "train", str(tmp_path), **options)  # the folder holding the cache
    test = load_split("mini-imagenet", "test", str(path), **options)  # or the file itself
    first_three = CLASS_IDS[:3]  # "the first 10 classes of the cache": class_dict's own order, not sorted
    assert train.class_names == tuple(first_three) == test.class_names
    assert np.bincount(train.labels).tolist() == [8, 8, 8] and np.bincount(test.labels).tolist() == [3, 3, 3]
    train_images, test_images = train.images(), test.images()
    assert train_images.shape == (24, 32, 32, 3)
    # first 8 rows of a class train, last 3 test, each resized 84 -> 32 bilinear
    rows = class_dict[first_three[1]]
    assert np.array_equal(train_images[8], pil_bilinear(image_data[rows[0]], 32))
    assert np.array_equal(test_images[5], pil_bilinear(image_data[rows[-1]], 32))
    assert load_split("mini-imagenet", "train", str(path), size=None, **options).images().shape[1:] == (
        84,
        84,
        3,
    )


def test_mini_imagenet_class_order_sorted_takes_the_first_class_ids_and_the_manifest_says_which(tmp_path):
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    image_data, class_dict = write_mini_imagenet_cache(path, CLASS_IDS, per_class=12)
    options = {"num_classes": 3, "train_per_class": 8, "test_per_class": 3}
    by_id = load_split("mini-imagenet", "train", str(path), class_order="sorted", **options)
    assert by_id.class_names == tuple(sorted(CLASS_IDS)[:3]) != tuple(CLASS_IDS[:3])
    assert np.array_equal(by_id.images()[0], pil_bilinear(image_data[class_dict[sorted(CLASS_IDS)[0]][0]], 32))
    manifests = {
        order: make_manifest(
            SubsetSpec("mini-imagenet", str(path), options | {"class_order": order}, train_per_class=4, val_per_class=2)
        )
        for order in ("cache", "sorted")
    }
    default = make_manifest(SubsetSpec("mini-imagenet", str(path), options, train_per_class=4, val_per_class=2))
    assert default["dataset"]["options"]["class_order"] == "cache"  # the default, written down
    assert default["class_names"] == manifests["cache"]["class_names"] == CLASS_IDS[:3]
    assert manifests["sorted"]["class_names"] == sorted(CLASS_IDS)[:3]
    assert manifests["sorted"]["dataset"]["options"]["class_order"] == "sorted"
    with pytest.raises(DataError, match=r"class_order must be one of cache, sorted, got 'alphabetical'"):
        load_split("mini-imagenet", "train", str(path), class_order="alphabetical")


def test_mini_imagenet_folder_follows_the_same_protocol(tmp_path):
    written = write_imagefolder(tmp_path, dict.fromkeys(CLASS_IDS, 6), size=84, split="images")
    root = tmp_path / "images"
    options = {"num_classes": 2, "train_per_class": 4, "test_per_class": 2}
    test = load_split("mini-imagenet", "test", str(root), class_order="sorted", **options)
    assert test.class_names == ("n01532829", "n01749939")
    assert np.array_equal(test.images()[0], pil_bilinear(written["n01532829"][4], 32))
    with pytest.raises(DataError, match=r"a folder of class folders has no cache order; set the option class_order"):
        load_split("mini-imagenet", "test", str(root), **options)


def test_mini_imagenet_errors(tmp_path):
    with pytest.raises(DataError, match=r"no Mini-ImageNet data.*mini-imagenet-cache-train.pkl"):
        load_split("mini-imagenet", "train", str(tmp_path))
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    write_mini_imagenet_cache(path, CLASS_IDS, per_class=5)
    with pytest.raises(DataError, match=r"4 classes, fewer than the 10 asked for"):
        load_split("mini-imagenet", "train", str(path))
    with pytest.raises(DataError, match=r"5 images, fewer than the protocol's 500 train \+ 100 test"):
        load_split("mini-imagenet", "train", str(path), num_classes=4)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"mini-imagenet-cache-train.pkl: corrupt or truncated"):
        load_split("mini-imagenet", "train", str(path), train_per_class=3, test_per_class=2, num_classes=2)


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda d, first: d[first].__setitem__(0, -25), r"class n\d+ lists row -25; rows are integers in \[0, 40\)"),
        (lambda d, first: d[first].__setitem__(0, -5), r"class n\d+ lists row -5"),  # once another class's image
        (lambda d, first: d[first].__setitem__(0, 40), r"lists row 40; rows are integers in \[0, 40\)"),
        (lambda d, first: d[first].__setitem__(0, 3.0), r"lists row 3.0"),
        (lambda d, first: d[first].__setitem__(0, "3"), r"lists row '3'"),
        (lambda d, first: d[first].__setitem__(1, d[first][0]), r"row \d+ is listed by class n\d+ and again"),
        (lambda d, first: d[CLASS_IDS[1]].__setitem__(0, d[first][0]), r"and again by class"),  # two classes
    ],
    ids=["-25", "-5", "past the end", "float", "string", "one image twice", "two classes share one"],
)
def test_a_mini_imagenet_class_dict_must_list_each_row_once_as_an_integer_in_range(tmp_path, edit, error):
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    image_data, class_dict = write_mini_imagenet_cache(path, CLASS_IDS, per_class=10)
    edit(class_dict, CLASS_IDS[0])
    path.write_bytes(pickle.dumps({"image_data": image_data, "class_dict": class_dict}, protocol=4))
    with pytest.raises(DataError, match=error):
        load_split("mini-imagenet", "train", str(path), num_classes=2, train_per_class=6, test_per_class=4)


# --- registry -----------------------------------------------------------------------------------------------


def test_registry_rejects_unknown_names():
    with pytest.raises(DataError, match=r"unknown dataset 'cifar100'; known datasets: cifar10, digits"):
        load_split("cifar100", "train")
    with pytest.raises(DataError, match=r"unknown split 'val'"):
        load_split("digits", "val")
    with pytest.raises(DataError, match=r"takes no option resize \(its options: size\)"):
        load_split("imagefolder", "train", "/tmp", resize=32)


# --- the real CIFAR-10 --------------------------------------------------------------------------------------


@needs_real_cifar
def test_real_cifar10_imagefolder():
    train = load_split("imagefolder", "train", str(CIFAR_FOLDER))
    test = load_split("imagefolder", "test", str(CIFAR_FOLDER))
    assert len(train) == 50_000 and len(test) == 10_000
    assert np.bincount(train.labels).tolist() == [5000] * 10
    assert train.class_names[:3] == ("airplane", "automobile", "bird")
    sample = train.images([0, 49_999])
    assert sample.shape == (2, 32, 32, 3) and sample.std() > 10
