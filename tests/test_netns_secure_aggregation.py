"""Secure aggregation on separate hosts: the deployment guide's federation (a coordinator and
three hospitals, each in its own network namespace, TLS, every step a documented command), one
run with ``secure-aggregation = true`` and central DP, so each site clips its own update.

Slow (≈ 2–3 min): the loopback deployment test in CI covers the same protocol with a site killed
after masking (tests/test_deployment.py); this one shows it across hosts.
"""

from __future__ import annotations

import json

import pytest

from tests.test_netns_deployment import (  # noqa: F401 (federation: the module's fixture)
    SITES,
    Federation,
    _fill,
    _metrics,
    _run_dir,
    federation,
)

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)
def test_a_secure_aggregation_run_with_central_dp_completes_on_separate_hosts(
    federation: Federation,  # noqa: F811
) -> None:
    root = federation.root
    secure = _fill(
        (root / "run.toml").read_text(),
        {"rounds": "2", "min-sites": "3"},
    )
    secure += "secure-aggregation = true\ncentral-noise-multiplier = 0.3\ncentral-clip-norm = 0.5\n"
    (root / "run-secure.toml").write_text(secure)
    for name in SITES:
        federation.start_site(name)
    ran = federation.fedscan("coordinator", "run", "--config", "run-secure.toml", timeout=720)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_dir = _run_dir(root)()
    assert run_dir is not None
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed", status
    history = _metrics(run_dir)
    assert [line["secure_aggregation"]["summed"] for line in history] == [3, 3]
    assert all(line["central_epsilon"] > 0 for line in history)
    for name in SITES:  # each site recorded both rounds as masked, clipped to central DP's C
        report = federation.fedscan(name, "privacy", "report", "--config", f"{name}.toml", "--json")
        assert report.returncode == 0, report.stdout + report.stderr
        (run,) = json.loads(report.stdout)["runs"]
        assert (run["rounds_masked"], run["masked_clip_bound"]) == (2, [0.5])
