"""Tests for ram_env.datasets (real MNIST/Omniglot only when RAM_DATA_DIR is set)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ram_env import datasets as D

REAL = os.environ.get("RAM_DATA_DIR")
needs_real = pytest.mark.skipif(not REAL, reason="RAM_DATA_DIR is not set: real MNIST/Omniglot files are not available")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Point the download cache at an empty directory so no test touches ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))


def _no_env(monkeypatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty_root"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("RAM_DATA_DIR", str(empty))


# ----------------------------------------------------------------------- IDX helpers


def _idx_bytes(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def _write_idx(path: Path, a: np.ndarray) -> Path:
    data = _idx_bytes(a)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _write_idx_set(d: Path, n_train: int, n_test: int, n_classes: int, gz: bool = True) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % n_classes).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % n_classes).astype(np.uint8),
    }
    for stem, a in arrays.items():
        _write_idx(d / (stem + (".gz" if gz else "")), a)
    return arrays


# ----------------------------------------------------------------------------- MNIST


@needs_real
def test_mnist_real():
    train = D.load_dataset("mnist", "train")
    val = D.load_dataset("mnist", "validation")
    test = D.load_dataset("mnist", "test")
    assert (len(train), len(val), len(test)) == (50_000, 10_000, 10_000)
    for ds, split in ((train, "train"), (val, "validation"), (test, "test")):
        assert ds.name == f"mnist/{split}"
        assert ds.n_classes == 10
        assert ds.images.dtype == np.uint8 and ds.images.shape[1:] == (1, 28, 28)
        assert ds.images.flags.c_contiguous
        assert ds.labels.dtype == np.int64
        assert not ds.images.flags.writeable and not ds.labels.flags.writeable
        with pytest.raises(ValueError):
            ds.images[0, 0, 0, 0] = 1
    full = np.concatenate([train.labels, val.labels])
    assert np.bincount(full).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert D.load_dataset("mnist", "train") is train  # cached
    # data_dir may be the folder holding the files or its parent
    assert D.load_dataset("mnist", "test", data_dir=Path(REAL) / "mnist").labels.tolist() == test.labels.tolist()


def test_mnist_missing_no_download(tmp_path, monkeypatch):
    _no_env(monkeypatch, tmp_path)
    given = tmp_path / "given"
    given.mkdir()
    _write_idx(given / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(D.DatasetError) as e:
        D.load_dataset("mnist", "train", data_dir=given, download=False)
    msg = str(e.value)
    assert "train-labels-idx1-ubyte.gz" in msg and "t10k" not in msg  # the train split needs no test file
    assert str(given) in msg and str(D.cache_dir() / "mnist") in msg
    # says how to point at the data: the variable (and its value) or data_dir
    assert "Set RAM_DATA_DIR=<folder holding mnist/>" in msg and str(tmp_path / "empty_root") in msg
    assert "data_dir=" in msg
    with pytest.raises(D.DatasetError) as e:
        D.load_dataset("mnist", "test", data_dir=given, download=False)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in str(e.value)


def test_mnist_download_falls_back_to_next_mirror(tmp_path, monkeypatch):
    _no_env(monkeypatch, tmp_path)
    rng = np.random.default_rng(1)
    files = {
        "train-images-idx3-ubyte.gz": _idx_bytes(rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte.gz": _idx_bytes(np.arange(12) % 10),
        "t10k-images-idx3-ubyte.gz": _idx_bytes(rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte.gz": _idx_bytes(np.arange(6) % 10),
    }
    files = {k: gzip.compress(v) for k, v in files.items()}
    monkeypatch.setattr(D, "MNIST_FILES", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    calls = []

    def fake_urlopen(request, timeout=None):
        url = request.full_url
        calls.append(url)
        if url.startswith(D.MNIST_MIRRORS[0]):
            raise urllib.error.URLError("mirror down")
        return io.BytesIO(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    ds = D.load_dataset("mnist", "validation")
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1]
    assert len(D.load_dataset("mnist", "train")) == 10
    assert len(calls) == 4  # the two training files, each after one failed mirror; no test file yet
    assert len(D.load_dataset("mnist", "test")) == 6
    assert len(calls) == 8
    assert sorted(p.name for p in (D.cache_dir() / "mnist").iterdir()) == sorted(files)


# ------------------------------------------------------------------------------ read_idx


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_read_idx_roundtrip(tmp_path, suffix):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = D.read_idx(_write_idx(tmp_path / f"img{suffix}", a))
    assert out.dtype == np.uint8 and np.array_equal(out, a)
    lab = np.array([3, 1, 4], np.uint8)
    assert np.array_equal(D.read_idx(_write_idx(tmp_path / f"lab{suffix}", lab)), lab)


def test_read_idx_errors(tmp_path):
    good = _idx_bytes(np.zeros((3, 4, 4), np.uint8))
    cases = {
        "truncated.idx": good[:-5],
        "too_long.idx": good + b"\0",
        "short_header.idx": good[:6],
        "bad_magic.idx": b"\x00\x00\x0b\x03" + good[4:],
        "bad_dims.idx": b"\x00\x00\x08\x02" + good[4:],
        "empty.idx": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    gz = gzip.compress(good)
    (tmp_path / "truncated.gz").write_bytes(gz[: len(gz) // 2])
    (tmp_path / "notgzip.gz").write_bytes(good)
    for name in [*cases, "truncated.gz", "notgzip.gz", "missing.gz"]:
        with pytest.raises(D.DatasetError, match=name.replace(".", r"\.")):
            D.read_idx(tmp_path / name)


# ---------------------------------------------------------------------------- download


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, fail_after: int | None = None):
        super().__init__(data)
        self.fail_after = fail_after

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(min(n, 10) if n > 0 else 10)


def _serve(monkeypatch, data: bytes, fail_after: int | None = None) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout=None: _FakeResponse(data, fail_after))


def test_download_file_ok(tmp_path, monkeypatch):
    data = b"hello world, this is a test payload" * 3
    _serve(monkeypatch, data)
    dest = tmp_path / "sub" / "file.bin"
    assert D.download_file("https://example.org/f", dest, hashlib.md5(data).hexdigest()) == dest
    assert dest.read_bytes() == data
    assert os.listdir(dest.parent) == ["file.bin"]
    D.verify_checksum(dest, hashlib.md5(data).hexdigest())
    with pytest.raises(D.DatasetError, match="file.bin"):
        D.verify_checksum(dest, "0" * 32)


def test_download_file_bad_md5_leaves_nothing(tmp_path, monkeypatch):
    _serve(monkeypatch, b"some bytes" * 10)
    with pytest.raises(D.DatasetError, match="checksum"):
        D.download_file("https://example.org/f", tmp_path / "file.bin", "0" * 32)
    assert os.listdir(tmp_path) == []


def test_download_file_connection_error_leaves_nothing(tmp_path, monkeypatch):
    data = b"x" * 100
    _serve(monkeypatch, data, fail_after=30)
    dest = tmp_path / "file.bin"
    with pytest.raises(D.DatasetError, match="ConnectionResetError"):
        D.download_file("https://example.org/f", dest, hashlib.md5(data).hexdigest())
    assert os.listdir(tmp_path) == []
    # an existing destination is left untouched
    dest.write_bytes(b"old")
    with pytest.raises(D.DatasetError):
        D.download_file("https://example.org/f", dest, hashlib.md5(data).hexdigest())
    assert os.listdir(tmp_path) == ["file.bin"] and dest.read_bytes() == b"old"


# ------------------------------------------------------------------------------- idx:


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset(tmp_path, gz):
    arrays = _write_idx_set(tmp_path / "fashion", 60, 7, 5, gz=gz)
    name = f"idx:{tmp_path / 'fashion'}"
    train, val, test = (D.load_dataset(name, s) for s in D.SPLITS)
    assert (len(train), len(val), len(test)) == (50, 10, 7)
    assert train.n_classes == 5 and train.images.shape == (50, 1, 5, 4)
    assert np.array_equal(val.images[:, 0], arrays["train-images-idx3-ubyte"][50:])
    assert np.array_equal(test.labels, arrays["t10k-labels-idx1-ubyte"])
    assert not train.images.flags.writeable


def test_idx_splits_read_only_their_own_files(tmp_path):
    """A corrupt t10k file does not stop the train and validation splits; a corrupt training file does not stop the
    test split (and the error names the file of the split asked for)."""
    d = tmp_path / "set"
    _write_idx_set(d, 12, 4, 3)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    name = f"idx:{d}"
    train, val = D.load_dataset(name, "train"), D.load_dataset(name, "validation")
    assert (len(train), len(val), train.n_classes) == (10, 2, 3)
    with pytest.raises(D.DatasetError, match="t10k-images"):
        D.load_dataset(name, "test")

    d2 = tmp_path / "set2"
    _write_idx_set(d2, 12, 4, 3)
    (d2 / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b truncated")
    test = D.load_dataset(f"idx:{d2}", "test")
    assert len(test) == 4 and test.n_classes == 3
    with pytest.raises(D.DatasetError, match="train-images"):
        D.load_dataset(f"idx:{d2}", "train")


def test_idx_test_split_counts_the_training_classes(tmp_path):
    d = tmp_path / "set"
    _write_idx_set(d, 12, 2, 4)  # the test labels are 0 and 1 only
    assert D.load_dataset(f"idx:{d}", "test").n_classes == D.load_dataset(f"idx:{d}", "train").n_classes == 4
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", np.array([0, 7], np.uint8))
    D.clear_cache()
    with pytest.raises(D.DatasetError, match="labels up to 7"):
        D.load_dataset(f"idx:{d}", "test")


def test_relative_data_dir_is_resolved_when_read(tmp_path, monkeypatch):
    """A relative RAM_DATA_DIR (or data_dir) names the folder under the working directory at the time it is read,
    as an absolute path that stays valid after a chdir and in child processes started elsewhere."""
    _write_idx_set(tmp_path / "data" / "mnist", 12, 4, 3)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAM_DATA_DIR", "data")
    root = tmp_path.resolve()  # resolve(): tmp_path may lie behind a symbolic link
    assert D.data_root() == root / "data" and D.data_root().is_absolute()
    assert D.data_root("data/mnist") == root / "data" / "mnist"
    monkeypatch.setenv("RAM_DATA_DIR", "~/x/../y")
    assert D.data_root() == (Path.home() / "y").resolve()


def test_idx_dataset_count_mismatch(tmp_path):
    d = tmp_path / "bad"
    _write_idx_set(d, 12, 4, 3)
    _write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(D.DatasetError, match="11 labels"):
        D.load_dataset(f"idx:{d}", "train")


def test_unknown_name_or_split():
    with pytest.raises(ValueError, match="mnist"):
        D.load_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="validation"):
        D.load_dataset("tiny", "dev")


# -------------------------------------------------------------------------- Omniglot


@needs_real
def test_omniglot_real():
    sizes = []
    for split in D.SPLITS:
        ds = D.load_dataset("omniglot", split)
        sizes.append(len(ds))
        assert ds.n_classes == 1623
        assert ds.images.shape[1:] == (1, 105, 105) and ds.images.dtype == np.uint8
        assert set(np.unique(ds.images[:50]).tolist()) <= {0, 255}
        assert ds.images.mean() < 64  # ink is bright, background dark
        assert np.array_equal(np.unique(ds.labels), np.arange(1623))
        assert not ds.images.flags.writeable
    assert sizes == [24_345, 3_246, 4_869]


def _write_omniglot_pngs(root: Path) -> None:
    for s, alphabets in (("images_background", ["Latin", "Greek"]), ("images_evaluation", ["Zulu", "Ainu"])):
        for a in alphabets:
            for c in ("character02", "character01"):
                for drawer in range(1, 21):
                    img = np.full((6, 6), 255, np.uint8)  # white background
                    img[0, 0] = 0  # ink
                    # encode class identity: row 5 gets ink at column = character number
                    img[5, int(c[-1])] = 0
                    img[3, ["Greek", "Latin", "Ainu", "Zulu"].index(a)] = 0
                    d = root / s / a / c
                    d.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).convert("1").save(d / f"0{drawer:03d}_{drawer:02d}.png")


def test_omniglot_png_layout(tmp_path, monkeypatch):
    _no_env(monkeypatch, tmp_path)
    _write_omniglot_pngs(tmp_path / "data" / "omniglot")
    train, val, test = (D.load_dataset("omniglot", s, data_dir=tmp_path / "data") for s in D.SPLITS)
    assert (len(train), len(val), len(test)) == (8 * 15, 8 * 2, 8 * 3)
    assert train.n_classes == 8 and train.images.shape[1:] == (1, 6, 6)
    assert train.labels.tolist() == np.repeat(np.arange(8), 15).tolist()
    assert test.labels.tolist() == np.repeat(np.arange(8), 3).tolist()
    # inverted: ink 255, background 0
    assert train.images[0, 0, 0, 0] == 255 and train.images[0, 0, 1, 1] == 0
    # order: background (Greek, Latin sorted) then evaluation (Ainu, Zulu), characters sorted
    for cls, (alpha, char) in enumerate([(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]):
        img = val.images[2 * cls, 0]
        assert img[3, alpha] == 255 and img[5, char] == 255


def test_omniglot_missing(tmp_path, monkeypatch):
    _no_env(monkeypatch, tmp_path)
    with pytest.raises(D.DatasetError, match="brendenlake/omniglot"):
        D.load_dataset("omniglot", "train", data_dir=tmp_path)


# -------------------------------------------------------------------------- CIFAR-10


def _write_cifar(folder: Path, per_batch: int = 10) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, :1024] = 200 + i  # R plane constant, so channel order is checkable
        data[:, 1024:2048] = 100
        data[:, 2048:] = 0
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        batch = {
            b"batch_label": f"batch {i}".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}_{k}.png".encode() for k in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        out[name] = (data, labels)
    return out


def test_cifar10(tmp_path, monkeypatch):
    _no_env(monkeypatch, tmp_path)
    batches = _write_cifar(tmp_path / "c" / "cifar-10-batches-py")
    train, val, test = (D.load_dataset("cifar10", s, data_dir=tmp_path / "c", download=False) for s in D.SPLITS)
    assert (len(train), len(val), len(test)) == (45, 5, 10)
    assert train.images.shape == (45, 3, 32, 32) and train.n_classes == 10
    assert (train.images[:10, 0] == 200).all() and (train.images[:, 1] == 100).all()
    assert (train.images[:, 2] == 0).all() and (val.images[:, 0] == 204).all()
    assert test.labels.tolist() == batches["test_batch"][1]
    assert np.array_equal(test.images.reshape(10, -1), batches["test_batch"][0])
    # the batches folder itself is accepted as data_dir
    same = D.load_dataset("cifar10", "test", data_dir=tmp_path / "c" / "cifar-10-batches-py", download=False)
    assert np.array_equal(same.images, test.images)


@pytest.mark.parametrize("corruption", ["truncated", "bad_shape", "missing_key", "label_count"])
def test_cifar10_corrupt(tmp_path, monkeypatch, corruption):
    _no_env(monkeypatch, tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    path = folder / "data_batch_3"
    if corruption == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        batch = pickle.loads(path.read_bytes(), encoding="bytes")
        if corruption == "bad_shape":
            batch[b"data"] = batch[b"data"][:, :100]
        elif corruption == "missing_key":
            del batch[b"labels"]
        else:
            batch[b"labels"] = batch[b"labels"][:-1]
        path.write_bytes(pickle.dumps(batch))
    with pytest.raises(D.DatasetError, match="data_batch_3"):
        D.load_dataset("cifar10", "train", data_dir=tmp_path, download=False)


def test_cifar10_download_and_safe_extract(tmp_path, monkeypatch):
    _no_env(monkeypatch, tmp_path)
    src = tmp_path / "src"
    _write_cifar(src / "cifar-10-batches-py", per_batch=4)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    good = buf.getvalue()
    monkeypatch.setattr(D, "CIFAR10_MD5", hashlib.md5(good).hexdigest())
    _serve(monkeypatch, good)
    ds = D.load_dataset("cifar10", "validation")
    assert len(ds) == 2
    assert os.listdir(D.cache_dir() / "cifar10") == ["cifar-10-batches-py"]

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    (tmp_path / "evil.tar.gz").write_bytes(evil.getvalue())
    with pytest.raises(D.DatasetError, match="unsafe"):
        D._safe_extract(tmp_path / "evil.tar.gz", tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_cifar10_missing(tmp_path, monkeypatch):
    _no_env(monkeypatch, tmp_path)
    with pytest.raises(D.DatasetError, match="cifar-10-python.tar.gz"):
        D.load_dataset("cifar10", "train", data_dir=tmp_path, download=False)


# ------------------------------------------------------------------------------ tiny


def test_tiny():
    a = D.load_dataset("tiny", "train")
    D.clear_cache()
    b = D.load_dataset("tiny", "train")
    assert a is not b and np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    sizes = {s: len(D.load_dataset("tiny", s)) for s in D.SPLITS}
    assert sizes == {"train": 256, "validation": 64, "test": 64}
    for s in D.SPLITS:
        ds = D.load_dataset("tiny", s)
        assert ds.images.shape[1:] == (1, 16, 16) and ds.images.dtype == np.uint8
        assert ds.n_classes == 4 and set(ds.labels.tolist()) == {0, 1, 2, 3}
        assert (ds.images.reshape(len(ds), -1).max(axis=1) >= 128).all()
    assert not np.array_equal(D.load_dataset("tiny", "validation").images, D.load_dataset("tiny", "test").images)


@needs_real
def test_suite_hands_child_processes_an_absolute_data_dir():
    """tests/conftest.py resolves a relative RAM_DATA_DIR once, so subprocesses started in other directories (the
    torchrun and command-line tests) find the data."""
    assert Path(os.environ["RAM_DATA_DIR"]).is_absolute()
