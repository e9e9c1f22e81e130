"""A secure-aggregation round end to end: the unmasked sum against the plain weighted sum, with
and without dropouts; aborts below the threshold; the one-kind-of-share rule; bad messages."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from fedscan.common.errors import ErrorCode, PrivacyError, QuorumError
from fedscan.common.secagg import (
    KeyAdvert,
    SecAggAborted,
    SecAggAggregator,
    SecAggConfig,
    SecAggProtocolError,
    SecAggResult,
    SecAggSite,
    ShareDelivery,
    UnmaskRefused,
    UnmaskRequest,
    run_in_process,
)
from fedscan.common.secagg.quantise import clip

DIMENSION = 300
CLIP = 1.0


def _config(threshold: int) -> SecAggConfig:
    return SecAggConfig("run-7", 2, DIMENSION, threshold=threshold, clip_bound=CLIP)


def _inputs(sites: int, seed: int = 0) -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return {
        f"site-{i:02d}": (rng.normal(scale=0.1, size=DIMENSION), int(rng.integers(1, 5000)))
        for i in range(sites)
    }


def _assert_plain_sum(
    result: SecAggResult, inputs: dict[str, tuple[np.ndarray, int]], members: set[str]
) -> None:
    plain = sum(w * clip(x, CLIP) for site, (x, w) in inputs.items() if site in members)
    weights = sum(w for site, (_, w) in inputs.items() if site in members)
    assert result.survivors == tuple(sorted(members))
    assert result.weight_total == weights
    assert np.max(np.abs(result.weighted_sum - plain)) < result.error_bound
    assert np.max(np.abs(result.mean - plain / weights)) < result.mean_error_bound


@pytest.mark.parametrize("sites", [3, 5, 10])
def test_the_sum_of_every_site_is_recovered(sites: int) -> None:
    inputs = _inputs(sites, seed=sites)
    result = run_in_process(_config(math.ceil(2 * sites / 3)), inputs)
    _assert_plain_sum(result, inputs, set(inputs))
    assert result.dropped == ()


@pytest.mark.parametrize(("sites", "dropping"), [(3, 1), (5, 1), (5, 2), (10, 2)])
def test_sites_that_drop_after_masking_are_still_in_the_sum(sites: int, dropping: int) -> None:
    inputs = _inputs(sites, seed=dropping)
    gone = sorted(inputs)[-dropping:]
    result = run_in_process(_config(sites // 2 + 1), inputs, drop_after_masking=gone)
    _assert_plain_sum(result, inputs, set(inputs))


@pytest.mark.parametrize(("sites", "dropping"), [(5, 1), (5, 2), (10, 2)])
def test_sites_that_drop_before_masking_are_left_out(sites: int, dropping: int) -> None:
    inputs = _inputs(sites, seed=10 + dropping)
    gone = sorted(inputs)[:dropping]  # the lowest ids: their masks were added, not subtracted
    result = run_in_process(_config(sites // 2 + 1), inputs, drop_before_masking=gone)
    _assert_plain_sum(result, inputs, set(inputs) - set(gone))
    assert result.dropped == tuple(gone)


def test_dropouts_at_both_stages_in_one_round() -> None:
    inputs = _inputs(10, seed=3)
    ids = sorted(inputs)
    result = run_in_process(
        _config(6), inputs, drop_before_masking=[ids[4]], drop_after_masking=[ids[0], ids[9]]
    )
    _assert_plain_sum(result, inputs, set(ids) - {ids[4]})


@pytest.mark.parametrize(
    ("before", "after", "stage"),
    [
        (["site-00", "site-01", "site-02"], [], "masked-input"),
        ([], ["site-02", "site-03"], "unmask"),
    ],
)
def test_fewer_than_threshold_survivors_abort_with_a_coded_reason(
    before: list[str], after: list[str], stage: str
) -> None:
    with pytest.raises(SecAggAborted) as aborted:
        run_in_process(_config(4), _inputs(5), drop_before_masking=before, drop_after_masking=after)
    assert isinstance(aborted.value, QuorumError)
    assert aborted.value.code == ErrorCode.QUORUM_LOST
    assert (aborted.value.stage, aborted.value.threshold) == (stage, 4)
    assert "lower the secure-aggregation threshold" in str(aborted.value)


def test_too_few_adverts_abort_and_a_threshold_of_half_is_refused() -> None:
    with pytest.raises(SecAggAborted, match="'advertise-keys': 2 of 2"):
        run_in_process(_config(3), _inputs(2))
    with pytest.raises(SecAggProtocolError, match="at least 3"):
        run_in_process(_config(2), _inputs(4))
    with pytest.raises(ValueError, match="at least 2"):
        _config(1)


def _to_masked_inputs(
    sites: int, threshold: int, maskers: int | None = None
) -> tuple[dict[str, SecAggSite], SecAggAggregator]:
    """A round up to its unmask request; the first ``maskers`` sites (default all) mask."""
    config, inputs = _config(threshold), _inputs(sites)
    parties = {site_id: SecAggSite(site_id, config) for site_id in inputs}
    aggregator = SecAggAggregator(config)
    for site in parties.values():
        aggregator.add_advert(site.advertise())
    roster = aggregator.close_adverts()
    for site in parties.values():
        aggregator.add_shares(site.share_keys(roster))
    for site_id, delivery in list(aggregator.close_shares().items())[:maskers]:
        aggregator.add_masked_input(parties[site_id].mask(delivery, *inputs[site_id]))
    return parties, aggregator


def test_a_site_never_reveals_both_shares_of_one_peer() -> None:
    # Prepare: a coordinator that first says all 5 survived, then that site-04 dropped.
    parties, aggregator = _to_masked_inputs(5, threshold=3)
    everyone = aggregator.close_masked_inputs()
    site = parties["site-00"]
    first = site.unmask(everyone)
    # Execute / Assert: the same request again is a retransmission; the second story is refused.
    assert site.unmask(everyone) == first
    with pytest.raises(UnmaskRefused, match="site-04") as refused:
        site.unmask(UnmaskRequest(everyone.survivors[:-1]))
    assert isinstance(refused.value, PrivacyError) and refused.value.peers == ("site-04",)


def test_a_wrong_key_share_is_caught_before_it_corrupts_the_sum() -> None:
    parties, aggregator = _to_masked_inputs(4, threshold=3, maskers=3)  # site-03 drops
    request = aggregator.close_masked_inputs()
    answers = [parties[site_id].unmask(request) for site_id in request.survivors]
    ((owner, y),) = answers[0].key_shares
    aggregator.add_answer(replace(answers[0], key_shares=((owner, y + 1),)))
    for answer in answers[1:]:
        aggregator.add_answer(answer)
    with pytest.raises(SecAggProtocolError, match="site-03's key match no advertised key"):
        aggregator.finish()


def _three_sites() -> tuple[list[SecAggSite], SecAggAggregator]:
    config = _config(2)
    return [SecAggSite(f"h{i}", config) for i in range(3)], SecAggAggregator(config)


BadAdvert = Callable[[KeyAdvert, KeyAdvert], KeyAdvert]  # (accepted, next) -> what is sent


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda accepted, _: accepted, "arrived twice"),
        (lambda accepted, new: replace(new, masking_key=accepted.masking_key), "another site's"),
        (lambda _, new: replace(new, masking_key=b"\x01" * 31), "32 bytes"),
        (lambda _, new: replace(new, site_id="a b"), "site id"),
    ],
)
def test_the_aggregator_refuses_bad_adverts(bad: BadAdvert, message: str) -> None:
    # Prepare: h0's advert is in.
    sites, aggregator = _three_sites()
    accepted, new = sites[0].advertise(), sites[1].advertise()
    aggregator.add_advert(accepted)
    # Execute / Assert
    with pytest.raises(SecAggProtocolError, match=message):
        aggregator.add_advert(bad(accepted, new))
    with pytest.raises(SecAggProtocolError, match="at adverts, not shares"):
        aggregator.close_shares()


def test_the_aggregator_refuses_malformed_bundles_and_masked_inputs() -> None:
    sites, aggregator = _three_sites()
    for site in sites:
        aggregator.add_advert(site.advertise())
    roster = aggregator.close_adverts()
    bundles = [site.share_keys(roster) for site in sites]
    first, second = bundles[0].envelopes
    truncated = replace(first, sealed=first.sealed[:-1])
    with pytest.raises(SecAggProtocolError, match="every other site"):
        aggregator.add_shares(replace(bundles[0], envelopes=(first,)))
    with pytest.raises(SecAggProtocolError, match="malformed envelope"):
        aggregator.add_shares(replace(bundles[0], envelopes=(truncated, second)))
    for bundle in bundles:
        aggregator.add_shares(bundle)
    masked = sites[0].mask(aggregator.close_shares()["h0"], np.zeros(DIMENSION), 1)
    with pytest.raises(SecAggProtocolError, match="uint64 values"):
        aggregator.add_masked_input(replace(masked, values=masked.values[:-1]))
    with pytest.raises(SecAggProtocolError, match="exceeds 2\\^k"):
        aggregator.add_masked_input(replace(masked, values=masked.values | (1 << 53)))
    aggregator.add_masked_input(masked)
    with pytest.raises(SecAggProtocolError, match="arrived twice"):
        aggregator.add_masked_input(masked)


def test_a_site_refuses_a_wrong_roster_delivery_or_request() -> None:
    sites, aggregator = _three_sites()
    for site in sites:
        aggregator.add_advert(site.advertise())
    roster = aggregator.close_adverts()
    with pytest.raises(SecAggProtocolError, match="another run or round"):
        sites[0].share_keys(replace(roster, round=3))
    stranger = SecAggSite("h0", _config(2)).advertise()
    with pytest.raises(SecAggProtocolError, match="this site's own keys"):
        sites[0].share_keys(replace(roster, adverts=(stranger, *roster.adverts[1:])))
    with pytest.raises(SecAggProtocolError, match="once, in order"):
        sites[0].mask(ShareDelivery("h0", ()), np.zeros(DIMENSION), 1)
    for site in sites:
        aggregator.add_shares(site.share_keys(roster))
    deliveries = aggregator.close_shares()
    envelope = deliveries["h0"].envelopes[0]
    forged = replace(envelope, sealed=envelope.sealed[:-1] + b"\x00")
    attempts = [
        (ShareDelivery("h0", (forged, deliveries["h0"].envelopes[1])), "failed authentication"),
        (ShareDelivery("h0", deliveries["h1"].envelopes), "outside the round|another site"),
        (deliveries["h1"], "wrong site"),
    ]
    for delivery, message in attempts:
        with pytest.raises(SecAggProtocolError, match=message):
            sites[0].mask(delivery, np.zeros(DIMENSION), 1)
    with pytest.raises(ValueError, match="round's dimension"):
        sites[0].mask(deliveries["h0"], np.zeros(DIMENSION + 1), 1)
    sites[0].mask(deliveries["h0"], np.zeros(DIMENSION), 1)
    with pytest.raises(SecAggProtocolError, match="leaves out this site"):
        sites[0].unmask(UnmaskRequest(("h1", "h2")))
    with pytest.raises(SecAggProtocolError, match="outside the round"):
        sites[0].unmask(UnmaskRequest(("h0", "h1", "h9")))
