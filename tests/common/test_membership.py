"""Membership-inference maths against known answers: φ and losses, the ROC figures, Clopper–Pearson,
the ε lower bound, and offline LiRA on Gaussians whose member shift is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from fedscan.common.errors import ConfigError, ModelError
from fedscan.common.membership import (
    attack_figures,
    clopper_pearson,
    fit_out,
    lira_offline,
    loss_attack,
)
from fedscan.common.membership.figures import epsilon_lower_bound, roc, roc_auc, tpr_at_fpr
from fedscan.common.membership.scores import (
    SINGLE_QUERY,
    check_classifier,
    confidence,
    example_loss,
    model_logits,
    shifted,
    view_confidence,
)
from fedscan.common.membership.shadows import shadow_splits
from fedscan.common.models.training import training_loss

DELTA = 1e-5


def _cp_upper_of_zero(n: int) -> float:
    return 1 - 0.025 ** (1 / n)  # Clopper–Pearson's closed form at 0 successes (2.5 % tail)


def test_confidence_is_the_log_odds_of_the_true_label() -> None:
    # Binary: p(true) = sigmoid(±z), so log(p / (1 − p)) = ±z.
    assert confidence(np.array([2.0, -1.0, 3.0]), np.array([1, 1, 0]), "classification") == (
        pytest.approx([2.0, -1.0, -3.0])
    )
    # Multiclass: p = e² / (e² + 2), log(p / (1 − p)) = 2 − log 2.
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    p = math.exp(2) / (math.exp(2) + 2)
    expected = [math.log(p / (1 - p)), 1 - math.log(math.exp(0) + math.exp(1))]
    assert confidence(logits, np.array([0, 2]), "multiclass") == pytest.approx(expected)
    # Multilabel: findings 0 and 2 present (bits 0b101), each finding's ±z summed.
    assert confidence(np.array([[1.0, 2.0, -3.0]]), np.array([0b101]), "multilabel") == (
        pytest.approx([1.0 - 2.0 - 3.0])
    )


@pytest.mark.parametrize(("kind", "classes"), [("classification", 1), ("multiclass", 3)])
def test_per_image_loss_is_the_training_loss(kind: str, classes: int) -> None:
    rng = np.random.default_rng(0)
    logits = (
        rng.normal(size=(6, classes)).squeeze(axis=1)
        if classes == 1
        else rng.normal(size=(6, classes))
    )
    labels = rng.integers(0, max(classes, 2), size=6)
    criterion = training_loss("bce", kind=kind, classes=tuple("abc"[:classes]))
    for i in range(6):
        expected = criterion(
            torch.tensor(logits[i : i + 1]), torch.tensor(labels[i : i + 1]).double()
        )
        assert example_loss(logits[i : i + 1], labels[i : i + 1], kind)[0] == pytest.approx(
            float(expected)
        )


def test_multilabel_loss_sums_the_findings() -> None:
    logits, labels = np.array([[0.5, -2.0, 1.5]]), np.array([0b011])
    criterion = training_loss("bce", kind="multilabel", classes=("a", "b", "c"))
    expected = float(criterion(torch.tensor(logits), torch.tensor(labels)))
    assert example_loss(logits, labels, "multilabel")[0] == pytest.approx(expected)


def test_shifted_views_move_whole_pixels_and_repeat_the_edge() -> None:
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    down = shifted(image, 1, 0)[0, 0]
    assert down[0].tolist() == [0, 1, 2, 3] and down[1:].tolist() == image[0, 0, :3].tolist()
    left = shifted(image, 0, -1)[0, 0]
    assert left[:, :3].tolist() == image[0, 0, :, 1:].tolist() and left[:, 3].tolist() == [
        3,
        7,
        11,
        15,
    ]


def test_view_confidence_averages_the_views() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1), torch.nn.Flatten(0))
    images, labels = torch.rand(5, 1, 4, 4), np.array([0, 1, 1, 0, 1])
    cpu = torch.device("cpu")
    one = view_confidence(model, images, labels, "classification", device=cpu, shifts=SINGLE_QUERY)
    assert one == pytest.approx(
        confidence(model_logits(model, images, device=cpu), labels, "classification")
    )
    two = view_confidence(
        model, images, labels, "classification", device=cpu, shifts=((0, 0), (1, 0))
    )
    moved = confidence(
        model_logits(model, shifted(images, 1, 0), device=cpu), labels, "classification"
    )
    assert two == pytest.approx((one + moved) / 2)


def test_segmentation_models_are_refused() -> None:
    with pytest.raises(ModelError, match="covers classifiers"):
        check_classifier("segmentation")


def test_a_perfect_separator() -> None:
    members, others = np.linspace(10, 20, 1000), np.linspace(0, 5, 1000)
    is_member = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    figures = attack_figures("perfect", np.r_[members, others], is_member, delta=DELTA)
    assert figures.auc == 1.0
    assert figures.tpr_at_fpr == {0.001: 1.0, 0.01: 1.0}
    assert figures.fpr_resolved == {0.001: True, 0.01: True}
    # TPR 1000 of 1000 at 0 false positives of 1000: (CP lower of 1) / (CP upper of 0).
    expected = math.log((0.025 ** (1 / 1000) - DELTA) / _cp_upper_of_zero(1000))
    assert figures.epsilon_lower_bound == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(5.60, abs=0.01)


def test_tpr_at_fpr_is_read_exactly_off_the_empirical_roc() -> None:
    others = np.arange(100.0)  # 100 non-members scored 0..99
    members = np.array([150, 140, 98.5, 97.5, 50, 40, 30, 20, 10, 0.5])
    curve = roc(np.r_[members, others], np.r_[np.ones(10, bool), np.zeros(100, bool)])
    assert tpr_at_fpr(curve, 0.0) == 0.2  # above 99: 150 and 140
    assert tpr_at_fpr(curve, 0.01) == 0.3  # one false positive (99) allowed: 98.5 too
    figures = attack_figures("hand", np.r_[members, others], curve_bits(10, 100), delta=DELTA)
    assert figures.fpr_resolved == {0.001: False, 0.01: True}  # 100 non-members cannot show 0.1 %
    assert figures.tpr_at_fpr[0.001] == 0.2


def curve_bits(members: int, others: int) -> np.ndarray:
    return np.r_[np.ones(members, bool), np.zeros(others, bool)]


def test_auc_counts_ties_as_half() -> None:
    # One member and one non-member tied, one member above: (1 + 0.5) / 2.
    assert roc_auc(roc(np.array([2.0, 1.0, 1.0]), np.array([True, True, False]))) == 0.75


def test_clopper_pearson_against_known_intervals() -> None:
    lower, upper = clopper_pearson(5, 10)
    assert (float(lower), float(upper)) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    lower, upper = clopper_pearson(np.array([0, 10]), 10)
    assert list(lower) == pytest.approx([0.0, 0.025 ** (1 / 10)])
    assert list(upper) == pytest.approx([_cp_upper_of_zero(10), 1.0])


def test_identical_distributions_prove_no_epsilon() -> None:
    rng = np.random.default_rng(7)
    bounds, aucs = [], []
    for _ in range(10):
        curve = roc(rng.normal(size=2000), curve_bits(1000, 1000))
        bounds.append(epsilon_lower_bound(curve, DELTA))
        aucs.append(roc_auc(curve))
    # The bound maximises over every threshold, so it can be slightly positive by chance (over
    # 200 draws of 1 000 + 1 000: in 5.5 %, at most 0.07); an attack that proves ε needs more.
    assert max(bounds) < 0.3
    assert abs(float(np.mean(aucs)) - 0.5) < 0.02


def test_the_bound_uses_the_swapped_direction_too() -> None:
    # Half the non-members score far below every member: no member is ever missed (FNR 0) while
    # half the non-members are caught, so TNR / FNR proves far more than TPR / FPR (1 / 0.5).
    members = np.zeros(1000)
    others = np.r_[np.full(500, -100.0), np.zeros(500)]
    curve = roc(np.r_[members, others], curve_bits(1000, 1000))
    tnr_low, _ = clopper_pearson(500, 1000)
    expected = math.log((float(tnr_low) - DELTA) / _cp_upper_of_zero(1000))
    assert epsilon_lower_bound(curve, DELTA) == pytest.approx(expected, rel=1e-6)


def test_shadow_splits_are_complementary_halves() -> None:
    splits = shadow_splits(11, 6, seed=0)
    assert splits.shape == (6, 11)
    assert (splits[0::2] == ~splits[1::2]).all()
    assert (splits.sum(axis=0) == 3).all()  # every image OUT of exactly half the shadows
    with pytest.raises(ConfigError, match="even number"):
        shadow_splits(11, 3, seed=0)


def test_out_fit_uses_only_the_shadows_that_did_not_train_on_the_image() -> None:
    phi = np.array([[1.0, 10.0], [3.0, 20.0]])
    fit = fit_out(phi, np.array([[True, False], [False, True]]))
    assert list(fit.mean) == [3.0, 10.0] and fit.global_variance
    assert list(fit.std) == [1.0, 1.0]  # one OUT shadow each: any constant ranks the same


def _gaussian_world(shadows: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """2 000 images whose φ is N(d_i, 0.5²) OUT and N(d_i + 1, 0.5²) IN, difficulty d_i ~ N(0, 3²);
    the first 1 000 are the target's members."""
    n, shift, noise = 2000, 1.0, 0.5
    difficulty = rng.normal(0, 3, size=n)
    splits = shadow_splits(n, shadows, seed=1)
    shadow_phi = difficulty + shift * splits + rng.normal(0, noise, size=splits.shape)
    is_member = curve_bits(1000, 1000)
    target_phi = difficulty + shift * is_member + rng.normal(0, noise, size=n)
    return shadow_phi, splits, target_phi, is_member


@pytest.mark.parametrize("shadows", [16, 64])  # global variance (8 OUT), per-image (32 OUT)
def test_lira_beats_the_loss_attack_where_the_member_shift_is_known(shadows: int) -> None:
    shadow_phi, splits, target_phi, is_member = _gaussian_world(shadows, np.random.default_rng(3))
    fit = fit_out(shadow_phi, splits)
    assert fit.global_variance == (shadows < 64)
    lira = attack_figures("lira", lira_offline(target_phi, fit), is_member, delta=DELTA)
    losses = np.logaddexp(0.0, -target_phi)  # log-loss of the true label's log-odds
    loss = attack_figures("loss", loss_attack(losses), is_member, delta=DELTA)
    # LiRA removes each image's difficulty: φ − μ_i is N(1, σ²) for members, N(0, σ²) for
    # non-members, σ² = 0.5² (1 + 2 / S), so AUC = Φ(1 / (σ √2)).
    sigma = 0.5 * math.sqrt(1 + 2 / shadows)
    assert lira.auc == pytest.approx(norm.cdf(1 / (sigma * math.sqrt(2))), abs=0.02)
    assert loss.auc < 0.65 < lira.auc
    assert lira.tpr_at_fpr[0.01] > loss.tpr_at_fpr[0.01] + 0.1
    assert lira.epsilon_lower_bound > loss.epsilon_lower_bound
