"""Image data sets for the recurrent-attention environments (Mnih et al. 2014).

Every loader returns an :class:`ImageDataset`: ``images`` of shape ``(N, C, H, W)``,
``uint8`` in 0..255, C-contiguous and read-only, and ``labels`` of shape ``(N,)``,
``int64`` in ``[0, n_classes)``. ``load_dataset`` caches results in-process
(keyed on the resolved arguments), so creating many environments is cheap.

Pixel convention
----------------
Zero is background and bright is "ink" for all grayscale sets, as in MNIST, so
that the zero padding outside the image (seen by glimpses at the border) reads
as background. Omniglot is therefore *inverted* on loading (ink = 255,
background = 0). CIFAR-10 images are RGB with channels in R, G, B order.

Data sets and splits
--------------------
``"mnist"``
    The four standard files ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz`` (uncompressed copies without ``.gz`` are
    accepted too). Splits as in deepmind/mnist-cluttered: train = first 50,000
    images of the training file, validation = last 10,000, test = the 10,000
    t10k images. The train and validation splits read only the two training
    files, the test split only the two t10k files. Images ``(N, 1, 28, 28)``.
    Missing files (of the split asked for) are downloaded (unless
    ``download=False``) into ``cache_dir()/mnist/`` from the mirrors in
    :data:`MNIST_MIRRORS`, tried in order, and checked against the well-known md5
    of each ``.gz``. Local files are not md5-checked, but their structure is
    always validated (see :func:`read_idx`).
``"idx:<directory>"``
    Any other data set in MNIST's IDX format and file names (e.g. Fashion-MNIST)
    in ``<directory>``. Same code path; validation = the last
    ``round(n_train / 6)`` images of the training file (exactly 10,000 for
    60,000), train = the rest; test = the t10k files. As for MNIST, each
    split reads only its own files, except that the test split also reads
    the training labels (when present) to count the classes alike:
    ``n_classes = max training label + 1``. Never downloaded.
``"omniglot"``
    Read from ``omniglot/images_background.npz`` and ``images_evaluation.npz``
    (arrays ``images`` (n_chars, 20, 105, 105) bool with True = white
    background, and ``labels`` (n_chars, 20) character index), or else from the
    official PNG layout of github.com/brendenlake/omniglot (the unzipped
    ``images_background.zip`` / ``images_evaluation.zip``):
    ``omniglot/images_background/<alphabet>/<character>/<id>_<drawer>.png``.
    The ``.npz`` files are preferred when both exist. Never downloaded.

    *Task*: 1623-way character classification over all characters of both
    sets. Class ids: the 964 characters of ``images_background`` first, then
    the 659 of ``images_evaluation`` (for PNGs: alphabets, then characters,
    sorted by name). Each character was drawn by 20 drawers; the drawers are
    split per character: drawers 1-15 -> train, 16-17 -> validation,
    18-20 -> test. So train 24,345, validation 3,246, test 4,869 images, every
    class in every split. Images ``(N, 1, 105, 105)``.
``"cifar10"``
    The official python version: ``cifar-10-batches-py/`` with
    ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``. Train = first
    45,000 of the 50,000 training images, validation = last 5,000 (in general
    the last tenth), test = ``test_batch``. Images ``(N, 3, 32, 32)``.
    Downloaded (unless ``download=False``) from :data:`CIFAR10_URL` into
    ``cache_dir()/cifar10/`` and extracted safely. The batches are pickles:
    load only files you trust.
``"tiny"``
    A tiny, deterministic, generated set for unit tests (no files): 4 classes
    (horizontal bar, vertical bar, square outline, diagonal) of 16x16 grayscale
    images at random offsets and intensities; train 256, validation 64, test 64
    images, ``(N, 1, 16, 16)``.

Where files are looked for
--------------------------
For data set ``<name>`` (``mnist``, ``omniglot``, ``cifar10``), in order:

1. the ``data_dir`` argument: either the directory holding the files itself,
   or a directory holding a ``<name>/`` subfolder;
2. ``$RAM_DATA_DIR/<name>/``;
3. ``cache_dir()/<name>/`` (``$XDG_CACHE_HOME/ram_env`` or
   ``~/.cache/ram_env``), where downloads go.

For CIFAR-10 each of these may be either the folder holding
``cifar-10-batches-py/`` or that folder itself. A relative ``data_dir`` or
``$RAM_DATA_DIR`` is resolved against the working directory when it is read
(:func:`data_root`).

Anything missing, truncated or corrupt raises :class:`DatasetError` with a
message that names the file and says how to fix it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATASETS",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "SPLITS",
    "DatasetError",
    "ImageDataset",
    "cache_dir",
    "clear_cache",
    "data_root",
    "download_file",
    "load_dataset",
    "read_idx",
    "verify_checksum",
]

SPLITS = ("train", "validation", "test")
DATASETS = ("mnist", "omniglot", "cifar10", "tiny")  # plus "idx:<directory>"

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
#: md5 of the original MNIST ``.gz`` files, keyed by file name.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_OMNIGLOT_SETS = ("images_background", "images_evaluation")
_OMNIGLOT_DRAWERS = 20
_OMNIGLOT_SPLIT_DRAWERS = {"train": (0, 15), "validation": (15, 17), "test": (17, 20)}
_IDX_MAGIC = {1: "labels", 3: "images"}  # number of dimensions -> kind
_CHUNK = 1 << 20


class DatasetError(Exception):
    """A data set is missing, truncated, corrupt or has a wrong checksum.

    The message says what is wrong and how to fix it.
    """


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64 of one split."""

    images: np.ndarray
    labels: np.ndarray
    n_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(
                f"{self.name}: images must be (N, C, H, W) uint8, got {self.images.shape} {self.images.dtype}"
            )
        if self.labels.shape != (self.images.shape[0],) or self.labels.dtype != np.int64:
            raise ValueError(
                f"{self.name}: labels must be ({self.images.shape[0]},) int64, got "
                f"{self.labels.shape} {self.labels.dtype}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


# --------------------------------------------------------------------------- paths


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The explicit ``data_dir``, else ``$RAM_DATA_DIR``, else None; as an absolute path.

    A relative path is resolved against the working directory when it is read, so a data set found once is found
    again by the same process after a ``chdir``, and the absolute path can be handed to child processes that run
    elsewhere.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    env = os.environ.get("RAM_DATA_DIR")
    return Path(env).expanduser().resolve() if env else None


def _pointing_hint(name: str) -> str:
    """How to point the loader at the files of data set ``name`` (for error messages)."""
    env = os.environ.get("RAM_DATA_DIR")
    now = f"now {data_root()}" if env else "now unset"
    return (
        f"Set RAM_DATA_DIR=<folder holding {name}/> ({now}), or pass data_dir=<folder> to gym.make "
        f"(train_agent.py --env-args data_dir=<folder>)."
    )


def cache_dir() -> Path:
    """User cache directory: ``$XDG_CACHE_HOME/ram_env`` or ``~/.cache/ram_env``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ram_env"


def _candidate_dirs(name: str, data_dir: str | None, env_root: str | None, cache: str) -> list[Path]:
    """Directories searched for data set ``name``, in order, without duplicates."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if env_root is not None:
        dirs.append(Path(env_root) / name)
    dirs.append(Path(cache) / name)
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _fmt_dirs(dirs: Sequence[Path]) -> str:
    return "\n".join(f"  - {d}" for d in dirs)


# ------------------------------------------------------------------ files, download


def verify_checksum(path: str | os.PathLike[str], md5: str) -> None:
    """Raise :class:`DatasetError` unless the file at ``path`` has md5 ``md5``."""
    path = Path(path)
    h = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise DatasetError(f"cannot read {path} to verify its checksum: {e}") from e
    if h.hexdigest() != md5.lower():
        raise DatasetError(
            f"checksum mismatch for {path}: md5 {h.hexdigest()}, expected {md5}. "
            "The file is corrupt or incomplete; delete it and download it again."
        )


def download_file(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` atomically, checking its md5.

    Streams into a temporary file in ``dest``'s directory, verifies the md5 and
    then ``os.replace``-s it onto ``dest``. On any failure the temporary file
    is removed, ``dest`` is left untouched, and :class:`DatasetError` is raised.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise DatasetError(f"cannot create a file in {dest.parent}: {e}") from e
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "ram_env"})
            with urllib.request.urlopen(request, timeout=60) as response:
                while chunk := response.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
        if h.hexdigest() != md5.lower():
            raise DatasetError(
                f"checksum mismatch for {url}: md5 {h.hexdigest()}, expected {md5} (corrupt or incomplete download)"
            )
        os.replace(tmp, dest)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, DatasetError) or not isinstance(e, Exception):
            raise
        raise DatasetError(f"download of {url} to {dest} failed: {type(e).__name__}: {e}") from e
    return dest


# ------------------------------------------------------------------------------ IDX


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in ``.gz``, raw otherwise).

    Accepts unsigned-byte data only: magic ``0x00000803`` (images, N x H x W) or
    ``0x00000801`` (labels, N). Checks that the payload length is exact.
    Returns a read-only ``uint8`` array. Raises :class:`DatasetError` naming the
    file on any problem (missing, truncated gzip, bad magic, wrong size).
    """
    path = Path(path)
    hint = "Delete it and download it again, or replace it with an intact copy."
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError as e:
        raise DatasetError(f"IDX file {path} does not exist") from e
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"cannot read IDX file {path} (corrupt or truncated): {e}. {hint}") from e
    if len(data) < 4:
        raise DatasetError(f"IDX file {path} is truncated: {len(data)} bytes, no header. {hint}")
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08 or ndim not in _IDX_MAGIC:
        raise DatasetError(
            f"{path} is not an unsigned-byte IDX images/labels file: magic "
            f"0x{int.from_bytes(data[:4], 'big'):08x}, expected 0x00000803 or 0x00000801"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"IDX file {path} is truncated inside its header. {hint}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise DatasetError(f"IDX file {path} is {what}: {len(data)} bytes, expected {expected} for dims {dims}. {hint}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


#: the IDX files of each part: train and validation come from the training files, test from the t10k files.
_IDX_PARTS = {"train": ("train_images", "train_labels"), "test": ("test_images", "test_labels")}


def _find_idx_files(d: Path, keys: Sequence[str]) -> tuple[dict[str, Path], list[str]]:
    """Map of the IDX files ``keys`` (of :data:`_IDX_NAMES`) found in ``d`` (.gz preferred) and the missing ones."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key in keys:
        stem = _IDX_NAMES[key]
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                found[key] = d / name
                break
        else:
            missing.append(stem + ".gz")
    return found, missing


def _download_mnist(dest_dir: Path, missing: list[str]) -> None:
    for fname in missing:
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                download_file(mirror + fname, dest_dir / fname, MNIST_FILES[fname])
                break
            except DatasetError as e:
                errors.append(str(e))
        else:
            raise DatasetError(f"could not download {fname} from any mirror:\n  " + "\n  ".join(errors))


def _load_idx_set(
    name: str, dirs: list[Path], n_classes: int | None, download_dir: Path | None, part: str
) -> tuple[dict, int]:
    """Load one part (``"train"``: train and validation; ``"test"``) of an MNIST-like IDX set from the first
    directory holding that part's two files. The other part's files are not read (a damaged test file does not
    stop training), except that the test part of an ``idx:`` set reads the training labels, when present, so that
    both parts count the same classes."""
    keys = _IDX_PARTS[part]
    report = []
    files: dict[str, Path] | None = None
    for d in dirs:
        found, missing = _find_idx_files(d, keys)
        if not missing:
            files = found
            break
        report.append(f"  - {d}: missing {', '.join(missing)}")
    if files is None and download_dir is not None:
        _, missing = _find_idx_files(download_dir, keys)
        try:
            _download_mnist(download_dir, missing)
        except DatasetError as e:
            report.append(f"download into {download_dir} failed: {e}")
        else:
            files = _find_idx_files(download_dir, keys)[0]
    if files is None:
        hint = _pointing_hint("mnist") if name == "mnist" else f"Put the files in {dirs[0]}."
        raise DatasetError(
            f"{name}: IDX files of the {part} split not found. Needed: "
            + ", ".join(_IDX_NAMES[k] + ".gz" for k in keys)
            + " (or uncompressed, without .gz). Searched:\n"
            + "\n".join(report)
            + f"\n{hint}"
        )

    pi, pl = files[keys[0]], files[keys[1]]
    images, labels = read_idx(pi), read_idx(pl)
    if images.ndim != 3 or labels.ndim != 1:
        raise DatasetError(f"{name}: {pi} must hold images (3 dims) and {pl} labels (1 dim)")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{name}: {pi} has {images.shape[0]} images but {pl} has {labels.shape[0]} labels")
    if name == "mnist" and images.shape[1:] != (28, 28):
        raise DatasetError(f"mnist: {pi} has images of size {images.shape[1:]}, expected 28x28")
    if n_classes is None:
        n_classes = int(labels.max(initial=0)) + 1
        if part == "test":
            train_labels, _ = _find_idx_files(pi.parent, ("train_labels",))
            if train_labels:
                n_train_classes = int(read_idx(train_labels["train_labels"]).max(initial=0)) + 1
                if n_classes > n_train_classes:
                    raise DatasetError(
                        f"{name}: {pl} has labels up to {n_classes - 1}, but the training labels only up to "
                        f"{n_train_classes - 1}"
                    )
                n_classes = n_train_classes
    if labels.max(initial=0) >= n_classes:
        raise DatasetError(f"{name}: {pl} has labels >= {n_classes}")

    x, y = images[:, None], labels.astype(np.int64)
    if part == "test":
        return {"test": (x, y)}, n_classes
    cut = x.shape[0] - round(x.shape[0] / 6)
    return {"train": (x[:cut], y[:cut]), "validation": (x[cut:], y[cut:])}, n_classes


# -------------------------------------------------------------------------- Omniglot


def _omniglot_npz(d: Path) -> tuple[list[np.ndarray], int]:
    """Bool arrays (n_chars, 20, H, W) per set (True = background) and class total."""
    sets = []
    offset = 0
    for s in _OMNIGLOT_SETS:
        path = d / f"{s}.npz"
        try:
            with np.load(path) as z:
                images, labels = z["images"], z["labels"]
        except Exception as e:
            raise DatasetError(f"omniglot: cannot read {path} (corrupt or truncated?): {e}") from e
        if images.dtype != np.bool_ or images.ndim != 4 or images.shape[1] != _OMNIGLOT_DRAWERS:
            raise DatasetError(
                f"omniglot: {path} 'images' must be (n_chars, 20, H, W) bool, got {images.shape} {images.dtype}"
            )
        expected = np.broadcast_to(np.arange(images.shape[0])[:, None], images.shape[:2])
        if labels.shape != images.shape[:2] or not np.array_equal(labels, expected):
            raise DatasetError(f"omniglot: {path} 'labels' must be the character index of each image")
        sets.append(images)
        offset += images.shape[0]
    if sets[0].shape[2:] != sets[1].shape[2:]:
        raise DatasetError(f"omniglot: images in {d} differ in size between the two sets")
    return sets, offset


_DRAWER_RE = re.compile(r"^\d+_(\d\d)\.png$")


def _omniglot_png(d: Path) -> tuple[list[np.ndarray], int]:
    """Read the official PNG layout into the same form as :func:`_omniglot_npz`."""
    from PIL import Image

    sets = []
    shape: tuple[int, ...] | None = None
    for s in _OMNIGLOT_SETS:
        chars = []
        for alphabet in sorted(p for p in (d / s).iterdir() if p.is_dir()):
            for char in sorted(p for p in alphabet.iterdir() if p.is_dir()):
                drawers: dict[int, Path] = {}
                for f in char.iterdir():
                    m = _DRAWER_RE.match(f.name)
                    if m:
                        drawers[int(m.group(1))] = f
                if sorted(drawers) != list(range(1, _OMNIGLOT_DRAWERS + 1)):
                    raise DatasetError(
                        f"omniglot: {char} must hold 20 PNGs <id>_01.png .. <id>_20.png, "
                        f"found drawers {sorted(drawers)}"
                    )
                imgs = []
                for k in range(1, _OMNIGLOT_DRAWERS + 1):
                    try:
                        with Image.open(drawers[k]) as im:
                            a = np.asarray(im.convert("L")) > 127
                    except Exception as e:
                        raise DatasetError(f"omniglot: cannot decode {drawers[k]}: {e}") from e
                    if shape is None:
                        shape = a.shape
                    if a.shape != shape:
                        raise DatasetError(f"omniglot: {drawers[k]} has size {a.shape}, expected {shape}")
                    imgs.append(a)
                chars.append(np.stack(imgs))
        if not chars:
            raise DatasetError(f"omniglot: no character folders in {d / s}")
        sets.append(np.stack(chars))
    return sets, sum(x.shape[0] for x in sets)


def _load_omniglot(dirs: list[Path]) -> tuple[dict, int]:
    source = None
    for d in dirs:
        if all((d / f"{s}.npz").is_file() for s in _OMNIGLOT_SETS):
            source = _omniglot_npz(d)
            break
        if all((d / s).is_dir() for s in _OMNIGLOT_SETS):
            source = _omniglot_png(d)
            break
    if source is None:
        raise DatasetError(
            "omniglot: not found. Needed either images_background.npz and "
            "images_evaluation.npz, or the folders images_background/ and "
            "images_evaluation/ unzipped from the official images_background.zip and "
            "images_evaluation.zip (github.com/brendenlake/omniglot, python/). Searched:\n"
            + _fmt_dirs(dirs)
            + "\n"
            + _pointing_hint("omniglot")
            + " Omniglot is not downloaded automatically."
        )
    sets, n_classes = source
    out = {}
    for split, (a, b) in _OMNIGLOT_SPLIT_DRAWERS.items():
        ink = ~np.concatenate([x[:, a:b] for x in sets])  # (n_chars, k, H, W) bool, True = ink
        pixels = ink.view(np.uint8)
        pixels *= 255
        h, w = pixels.shape[2:]
        images = pixels.reshape(-1, 1, h, w)
        labels = np.repeat(np.arange(n_classes, dtype=np.int64), b - a)
        out[split] = (images, labels)
    return out, n_classes


# -------------------------------------------------------------------------- CIFAR-10


def _find_cifar(dirs: list[Path]) -> Path | None:
    for d in dirs:
        for c in (d / _CIFAR_DIR, d):
            if all((c / f).is_file() for f in (*_CIFAR_TRAIN, _CIFAR_TEST)):
                return c
    return None


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive, rejecting absolute paths, ``..`` and non-regular members."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                p = Path(m.name)
                if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                    raise DatasetError(f"refusing to extract unsafe member {m.name!r} of {archive}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(dest, members=members)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"cannot extract {archive} (corrupt or truncated?): {e}") from e


def _download_cifar(dest_dir: Path) -> Path:
    archive = download_file(CIFAR10_URL, dest_dir / "cifar-10-python.tar.gz", CIFAR10_MD5)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=dest_dir))
    except OSError as e:
        raise DatasetError(f"cannot create a directory in {dest_dir}: {e}") from e
    try:
        _safe_extract(archive, tmp)
        if not (tmp / _CIFAR_DIR).is_dir():
            raise DatasetError(f"{archive} does not contain {_CIFAR_DIR}/")
        shutil.rmtree(dest_dir / _CIFAR_DIR, ignore_errors=True)
        os.replace(tmp / _CIFAR_DIR, dest_dir / _CIFAR_DIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink(missing_ok=True)
    return dest_dir / _CIFAR_DIR


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as e:
        raise DatasetError(
            f"cifar10: cannot unpickle {path} (corrupt or truncated?): {e}. "
            "Delete the cifar-10-batches-py folder and download it again."
        ) from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"cifar10: {path} is not a CIFAR-10 batch (needs keys b'data', b'labels')")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"cifar10: {path} b'data' must be an (n, 3072) uint8 array")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"cifar10: {path} b'labels' must be a list of ints") from e
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"cifar10: {path} has {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise DatasetError(f"cifar10: {path} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(dirs: list[Path], download_dir: Path | None) -> tuple[dict, int]:
    folder = _find_cifar(dirs)
    error = ""
    if folder is None and download_dir is not None:
        try:
            folder = _download_cifar(download_dir)
        except DatasetError as e:
            error = f"\nDownload into {download_dir} failed: {e}"
    if folder is None:
        raise DatasetError(
            f"cifar10: {_CIFAR_DIR}/ (data_batch_1..5, test_batch) not found. Searched:\n"
            + _fmt_dirs(dirs)
            + error
            + f"\nGet {CIFAR10_URL} and extract it into a folder cifar10/. "
            + _pointing_hint("cifar10")
        )
    train = [_read_cifar_batch(folder / f) for f in _CIFAR_TRAIN]
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    test_x, test_y = _read_cifar_batch(folder / _CIFAR_TEST)
    cut = train_x.shape[0] - train_x.shape[0] // 10
    return {
        "train": (train_x[:cut], train_y[:cut]),
        "validation": (train_x[cut:], train_y[cut:]),
        "test": (test_x, test_y),
    }, 10


# ------------------------------------------------------------------------------ tiny


def _tiny_split(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = 16
    labels = rng.permutation(np.arange(n) % 4).astype(np.int64)
    images = np.zeros((n, 1, size, size), np.uint8)
    for i, c in enumerate(labels):
        shape = np.zeros((8, 8), bool)
        if c == 0:
            shape[3:5, :] = True  # horizontal bar
        elif c == 1:
            shape[:, 3:5] = True  # vertical bar
        elif c == 2:
            shape[[0, -1], :] = True  # square outline
            shape[:, [0, -1]] = True
        else:
            shape[np.arange(8), np.arange(8)] = True  # diagonal
        y, x = rng.integers(0, size - 8 + 1, size=2)
        images[i, 0, y : y + 8, x : x + 8][shape] = rng.integers(128, 256)
    return images, labels


def _load_tiny() -> tuple[dict, int]:
    sizes = {"train": (0, 256), "validation": (1, 64), "test": (2, 64)}
    return {split: _tiny_split(seed, n) for split, (seed, n) in sizes.items()}, 4


# ------------------------------------------------------------------------ entry point


@functools.lru_cache(maxsize=16)
def _load_all(
    name: str, data_dir: str | None, env_root: str | None, cache: str, download: bool, part: str
) -> dict[str, ImageDataset]:
    """Load the splits of one data set that ``part`` covers; cached on the resolved arguments.

    ``part`` is ``"train"`` (the train and validation splits) or ``"test"``: IDX sets (``mnist``, ``idx:``) read only
    that part's files. The other loaders read every split whatever the part (their files are not split so).
    """
    if name == "tiny":
        splits, n_classes = _load_tiny()
    elif name.startswith("idx:"):
        d = Path(name[4:]).expanduser()
        splits, n_classes = _load_idx_set(name, [d], None, None, part)
    else:
        dirs = _candidate_dirs(name, data_dir, env_root, cache)
        download_dir = Path(cache) / name if download else None
        if name == "mnist":
            splits, n_classes = _load_idx_set(name, dirs, 10, download_dir, part)
        elif name == "omniglot":
            splits, n_classes = _load_omniglot(dirs)
        else:
            splits, n_classes = _load_cifar(dirs, download_dir)
    out = {}
    for split, (images, labels) in splits.items():
        images = np.ascontiguousarray(images)
        labels = np.ascontiguousarray(labels)
        images.flags.writeable = False
        labels.flags.writeable = False
        out[split] = ImageDataset(images, labels, n_classes, f"{name}/{split}")
    return out


def load_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> ImageDataset:
    """Load one split of a data set (see the module docstring).

    ``name`` is one of :data:`DATASETS` or ``"idx:<directory>"``; ``split`` one of
    :data:`SPLITS`. ``data_dir`` is searched before ``$RAM_DATA_DIR`` and the
    cache. ``download`` allows downloading MNIST / CIFAR-10 into :func:`cache_dir`.
    Results are cached in-process; the arrays are read-only.
    """
    if not isinstance(name, str) or not (name in DATASETS or (name.startswith("idx:") and len(name) > 4)):
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS} or 'idx:<directory>'")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    # The IDX sets read the training files for train and validation and the t10k files for test; the others read
    # all their files at once, so one cache entry serves every split.
    part = "test" if split == "test" and (name == "mnist" or name.startswith("idx:")) else "train"
    if name == "tiny":
        key: tuple = (name, None, None, "", False)
    elif name.startswith("idx:"):
        key = ("idx:" + str(Path(name[4:]).expanduser().resolve()), None, None, "", False)
    else:
        explicit = str(data_root(data_dir)) if data_dir is not None else None
        env = data_root(None)
        key = (
            name,
            explicit,
            str(env) if env is not None else None,
            str(cache_dir().resolve()),
            bool(download) and name != "omniglot",
        )
    return _load_all(*key, part)[split]


def clear_cache() -> None:
    """Forget the in-process cache of :func:`load_dataset`."""
    _load_all.cache_clear()
