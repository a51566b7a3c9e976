"""Shared fixtures: real-data skip markers, an isolated download cache, a tiny fake CIFAR-10, README snippets.

The whole test run uses one torch thread (set at import): results do not depend on the machine's core count, and
on a small shared machine more threads only wait for each other.

Markers (registered here, applied with ``@pytest.mark.requires_mnist`` or ``pytest.param(..., marks=...)``):

* ``requires_mnist``: skip unless ``$RAM_DATA_DIR/mnist/`` holds the four MNIST IDX files.
* ``requires_omniglot``: skip unless ``$RAM_DATA_DIR/omniglot/`` holds the two Omniglot ``.npz`` files
  (or folders).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import ram_env
from agents.config import TrainConfig, resolve_config
from agents.threads import set_threads
from ram_env.datasets import data_root

torch.set_num_threads(1)

README = Path(__file__).resolve().parents[1] / "README.md"

_MNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_OMNIGLOT_SETS = ("images_background", "images_evaluation")

#: images per fake CIFAR-10 batch file: 5 x 12 = 60 training images (54 train + 6 validation), 12 test images.
FAKE_CIFAR_PER_BATCH = 12


def _data_dir() -> Path | None:
    root = os.environ.get("RAM_DATA_DIR")
    return Path(root) if root else None


def has_mnist() -> bool:
    root = _data_dir()
    if root is None:
        return False
    d = root / "mnist"
    return all((d / s).is_file() or (d / (s + ".gz")).is_file() for s in _MNIST_STEMS)


def has_omniglot() -> bool:
    root = _data_dir()
    if root is None:
        return False
    d = root / "omniglot"
    return all((d / f"{s}.npz").is_file() or (d / s).is_dir() for s in _OMNIGLOT_SETS)


def pytest_configure(config: pytest.Config) -> None:
    # One torch thread unless OMP_NUM_THREADS says otherwise (the suite's processes share the cores), and an absolute
    # RAM_DATA_DIR, so that child processes started in other directories (torchrun, the CLI tests) find the data.
    set_threads("auto")
    if os.environ.get("RAM_DATA_DIR"):
        os.environ["RAM_DATA_DIR"] = str(data_root())
    config.addinivalue_line("markers", "requires_mnist: needs real MNIST in $RAM_DATA_DIR/mnist/")
    config.addinivalue_line("markers", "requires_omniglot: needs real Omniglot in $RAM_DATA_DIR/omniglot/")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_mnist") and not has_mnist():
        pytest.skip("real MNIST not found: set RAM_DATA_DIR to a directory holding mnist/ with the four IDX files")
    if item.get_closest_marker("requires_omniglot") and not has_omniglot():
        pytest.skip("real Omniglot not found: set RAM_DATA_DIR to a directory holding omniglot/*.npz")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point the download cache at an empty directory for the session, so no test reads or fills ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


def write_fake_cifar10(root: Path, per_batch: int = FAKE_CIFAR_PER_BATCH, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py/`` in the official pickle format and return ``root``.

    Each of ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` is a pickled dict with ``b"batch_label"``,
    ``b"labels"`` (list of int), ``b"data"`` ((n, 3072) uint8, channel-major R, G, B rows of 32 x 32) and
    ``b"filenames"``, as in the official archive.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = [int(v) for v in rng.permutation(np.arange(per_batch) % 10)]
        batch = {
            b"batch_label": f"fake {name}".encode(),
            b"labels": labels,
            b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return root


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a tiny fake ``cifar-10-batches-py/``; pass it as ``data_dir`` to RAM/CIFAR10-v0."""
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar10"))


def data_marks(env_id: str) -> list:
    """The skip markers an id needs (its data set)."""
    dataset = ram_env.BENCHMARKS[env_id.removeprefix("ram_env:")]["dataset"]
    return {"mnist": [pytest.mark.requires_mnist], "omniglot": [pytest.mark.requires_omniglot]}.get(dataset, [])


#: every registered id, as pytest params carrying their data skip markers.
ALL_IDS = [pytest.param(env_id, marks=data_marks(env_id), id=env_id) for env_id in ram_env.BENCHMARKS]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``registered_id`` runs once per registered id (skipped where its data is absent)."""
    if "registered_id" in metafunc.fixturenames:
        metafunc.parametrize("registered_id", ALL_IDS)


@pytest.fixture
def env_kwargs(cifar_dir: Path):
    """``env_kwargs(env_id)``: the extra ``gym.make`` arguments an id needs here (fake CIFAR-10 folder)."""

    def kwargs(env_id: str) -> dict:
        if ram_env.BENCHMARKS[env_id.removeprefix("ram_env:")]["dataset"] == "cifar10":
            return {"data_dir": str(cifar_dir), "download": False}
        return {}

    return kwargs


@pytest.fixture(scope="session")
def readme_snippet() -> Callable[[str], str]:
    """``readme_snippet(text)``: the source of the one ```python block of README.md that contains ``text``.

    Tests run the README's examples as written there (no copies to drift apart from it).
    """
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)

    def find(text: str) -> str:
        found = [b for b in blocks if text in b]
        assert len(found) == 1, f"README.md has {len(found)} python blocks containing {text!r}, expected one"
        return found[0]

    return find


#: A tiny task for training tests: the generated 4-class set on 24 x 24 canvases, 2 scales of 4 x 4.
TINY_ENV_ARGS = "dataset=tiny,glimpse_size=4,num_scales=2,canvas_size=24"


@pytest.fixture(scope="session")
def tiny_run_config() -> Callable[..., TrainConfig]:
    """``tiny_run_config(output, **overrides)``: a RAM training configuration that trains in about a second (the tiny
    task, a small agent, one epoch, batch 16, seed 3, CPU), with ``overrides`` applied as command-line flags are."""

    def make(output: Path, **overrides) -> TrainConfig:
        values = dict(
            env_args=TINY_ENV_ARGS,
            output=str(output),
            device="cpu",
            seed=3,
            epochs=1,
            batch_size=16,
            hidden_size=32,
            glimpse_hidden=16,
            glimpse_out=32,
        )
        return resolve_config({**values, **overrides})

    return make
