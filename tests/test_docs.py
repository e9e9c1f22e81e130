"""The docs a reader navigates: the settings reference is the code's; links and the README hold."""

from __future__ import annotations

import re
from pathlib import Path

from fedscan.cli.reference import reference

ROOT = Path(__file__).resolve().parents[1]


def test_the_settings_reference_is_generated_from_the_dataclasses() -> None:
    committed = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert committed == reference(), (
        "regenerate it: python -m fedscan.cli.reference > docs/reference.md"
    )


def test_the_reference_documents_every_key_the_readers_accept() -> None:
    text = reference()
    for key in (
        "max-epsilon-per-run",
        "decode-workers",
        "labels-csv",
        "poll-interval-s",
        "private-key",
        "fleet-address",
        "site-authentication",
        "learning-rate",
        "dp",
        "cross-site",
        "norm-gate",
    ):
        assert f"| `{key}` |" in text, key
    assert "| `proximal-mu` |" in text and "| `seed` |" in text


def test_every_relative_link_in_the_docs_points_at_a_file() -> None:
    pages = [ROOT / "README.md", ROOT / "deploy" / "README.md", *(ROOT / "docs").glob("*.md")]
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}"


def test_the_readme_starts_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.split("```bash\n", 1)[1].startswith("make demo") and "make test" in readme[:400]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    # What fedscan is, the two commands, the roles, the map, and the tables issues asked for there.
    assert len(readme.splitlines()) < 175
