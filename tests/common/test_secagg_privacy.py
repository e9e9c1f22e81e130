"""What the coordinator sees of one site, and where the randomness comes from.

A masked input must look uniform mod 2^k whatever the update, and no code path of the package
may draw masks, seeds or rounding from a non-cryptographic generator.
"""

from __future__ import annotations

import ast
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy.stats import chisquare, ks_2samp, kstest

import fedscan.common.secagg as secagg
from fedscan.common.secagg import (
    SecAggAggregator,
    SecAggConfig,
    SecAggSite,
    run_in_process,
    streams,
)

DIMENSION = 20_000
ALPHA = 1e-6  # a chance failure of a statistical check: once in a million runs
PACKAGE = Path(secagg.__file__).parent
# Non-cryptographic generators: the standard library's, NumPy's, torch's.
FORBIDDEN_MODULES = ("random", "numpy.random", "torch")
FORBIDDEN_ATTRIBUTES = {"random", "default_rng", "RandomState", "rand", "randn", "randint"}
FORBIDDEN_TEXT = re.compile(
    r"np\.random|numpy\.random|default_rng|RandomState|torch\.rand|^\s*(import|from) random\b",
    re.MULTILINE,
)


def _masked_inputs(updates: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """The masked inputs the coordinator receives for ``updates`` (weight 1 each), and k."""
    config = SecAggConfig("run-privacy", 0, DIMENSION, threshold=2, clip_bound=1.0)
    sites = {site_id: SecAggSite(site_id, config) for site_id in updates}
    aggregator = SecAggAggregator(config)
    for site in sites.values():
        aggregator.add_advert(site.advertise())
    roster = aggregator.close_adverts()
    for site in sites.values():
        aggregator.add_shares(site.share_keys(roster))
    masked = {
        site_id: sites[site_id].mask(delivery, updates[site_id], 1).values
        for site_id, delivery in aggregator.close_shares().items()
    }
    return masked, aggregator.quantiser.bits


def _as_unit(values: np.ndarray, bits: int) -> np.ndarray:
    return values[:-1].astype(np.float64) / 2.0**bits  # the weight coordinate left out


def test_masked_inputs_of_very_different_updates_are_uniform_and_alike() -> None:
    # Prepare: all zeros at one site, the whole clipping bound on every coordinate at another.
    updates = {
        "a": np.zeros(DIMENSION),
        "b": np.full(DIMENSION, 1.0 / np.sqrt(DIMENSION)),
        "c": np.zeros(DIMENSION),
    }
    # Execute
    masked, bits = _masked_inputs(updates)
    zeros, full = _as_unit(masked["a"], bits), _as_unit(masked["b"], bits)
    # Assert: each is uniform on [0, 1), and the two cannot be told apart.
    assert kstest(zeros, "uniform").pvalue > ALPHA
    assert kstest(full, "uniform").pvalue > ALPHA
    assert ks_2samp(zeros, full).pvalue > ALPHA
    low_bytes = np.bincount((masked["b"] & np.uint64(0xFF)).astype(np.int64), minlength=256)
    assert chisquare(low_bytes).pvalue > ALPHA


def test_the_uniformity_check_would_see_an_unmasked_update() -> None:
    config = SecAggConfig("run-privacy", 0, DIMENSION, threshold=2, clip_bound=1.0)
    encoded = config.quantiser(3).encode(np.full(DIMENSION, 1.0 / np.sqrt(DIMENSION)), 1)
    assert kstest(_as_unit(encoded, config.quantiser(3).bits), "uniform").pvalue < ALPHA


def test_no_code_path_uses_a_non_cryptographic_generator() -> None:
    sources = sorted(PACKAGE.glob("*.py"))
    assert len(sources) >= 10
    for path in sources:
        text = path.read_text()
        assert not FORBIDDEN_TEXT.search(text), path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            assert not [name for name in names if name.startswith(FORBIDDEN_MODULES)], path.name
            if isinstance(node, ast.Attribute):
                assert node.attr not in FORBIDDEN_ATTRIBUTES, (path.name, node.attr)


def test_masks_are_the_chacha20_keystream() -> None:
    key = bytes(range(32))
    expected = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(80))
    words = np.frombuffer(expected, dtype="<u8").astype(np.uint64)
    assert np.array_equal(streams.mask(key, 10, 64), words)
    assert np.array_equal(streams.mask(key, 10, 47), words & np.uint64(2**47 - 1))


def test_seeds_rounding_and_share_coefficients_come_from_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn = {"token_bytes": 0, "randbelow": 0}

    def counted(name: str) -> Callable[..., object]:
        original = getattr(secrets, name)

        def draw(*args: int) -> object:
            drawn[name] += 1
            return original(*args)

        return draw

    for name in drawn:
        monkeypatch.setattr(secrets, name, counted(name))
    inputs = {f"s{i}": (np.zeros(10), 1) for i in range(4)}
    run_in_process(SecAggConfig("run-r", 0, 10, threshold=3, clip_bound=1.0), inputs)
    # Per site: a self-mask seed and a rounding key; 2 secrets x (threshold - 1) coefficients.
    assert drawn == {"token_bytes": 4 * 2, "randbelow": 4 * 2 * 2}
