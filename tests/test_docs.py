"""README.md is a user's page: short, self-contained, its links resolve inside the project."""

from __future__ import annotations

import re

from helpers import config

README = config.PROJECT_ROOT / "README.md"
README_LIMIT_BYTES = 10_240  # 10 KB: a page a newcomer reads in two minutes; method details live in the reports


def test_readme_is_short_and_points_nowhere_outside_the_project():
    text = README.read_text()
    assert len(text.encode()) <= README_LIMIT_BYTES, f"README.md is {len(text.encode()):,} bytes"
    assert "../" not in text and "shared/" not in text
    links = re.findall(r"\]\((?!https?://)([^)#]+)\)", text)
    assert links, "README links the design page, the model card and the speed report"
    missing = [link for link in links if not (config.PROJECT_ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_readme_shows_the_two_commands_and_the_test_command_ci_runs():
    text = README.read_text()
    assert "make demo" in text and "make test " in text
    assert "make test" in (config.PROJECT_ROOT / ".ci" / "run").read_text()


def test_readme_states_the_rule_that_chooses_the_published_default_in_the_model_cards_words():
    from helpers.reporting.published_default import DEFAULT_RULE

    assert DEFAULT_RULE in " ".join(README.read_text().split())
