"""Shared fixtures: small synthetic DICOM sites, generated once per session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.server.inprocess import flower_identity as in_flower_process

# The longest test files go first: on `make test`'s 2 workers (one file each at a time) they start
# together and the short files fill in around them, instead of one of them ending the run alone.
# Sequential, 2 cores: test_deployment.py 200–300 s, test_netns_deployment.py 150–170 s,
# test_signals.py ~70 s; every other file ≤ 45 s.
LONGEST_FIRST = (
    "tests/test_deployment.py",
    "tests/test_netns_deployment.py",
    "tests/test_signals.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable


def pytest_configure(config: pytest.Config) -> None:
    """Keep the decode cache of CLI and simulation tests out of the user's ~/.cache."""
    os.environ["FEDSCAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="fedscan-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.pop("FEDSCAN_CACHE_DIR", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def synthetic_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small synthetic hospitals (40 images each)."""
    return generate_sites(
        tmp_path_factory.mktemp("sites"), SynthConfig(sites=3, images_per_site=40, seed=3)
    )


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MedMNIST-style npz: bright centre square = positive."""
    rng = np.random.default_rng(0)

    def split(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, size=(count, 1))
        images = rng.integers(0, 80, size=(count, 28, 28)).astype(np.uint8)
        images[labels[:, 0] == 1, 10:18, 10:18] += 150
        return images, labels

    path = tmp_path_factory.mktemp("npz") / "tiny.npz"
    (tri, trl), (vai, val) = split(120), split(60)
    np.savez(path, train_images=tri, train_labels=trl, val_images=vai, val_labels=val)
    return path


@pytest.fixture()
def flower_identity():
    """Strategies build messages with the process' task identity; a Flower process sets it."""
    with in_flower_process():
        yield
