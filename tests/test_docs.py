"""The docs say what the code does: the configuration reference is the one the code generates, every command of
the README's table has its section on the commands page, and the exit codes on the failures page are the CLI's."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


def test_the_configuration_reference_is_generated_from_the_code():
    from flows.reporting.reference import PAGE, render

    assert PAGE.read_text() == render(), (
        "regenerate it: python -m flows.reporting.reference --write docs/configuration.md"
    )


def test_the_reference_lists_every_key_kind_option_kd_option_and_variable():
    from components.config import PipelineConfig
    from components.data.options import OPTIONS
    from components.kd import METHODS
    from flows.infra.environment import VARIABLES
    from flows.reporting.reference import value

    page = (REPO / "docs" / "configuration.md").read_text()
    for section, field in PipelineConfig.model_fields.items():
        if section != "data":
            assert all(f"`{section}.{key}`" in page for key in field.annotation.model_fields), section
    assert all(f"### datasets.NAME.options of kind {kind}" in page for kind in OPTIONS)
    for name, cls in METHODS.items():
        for option, f in cls.Options.model_fields.items():
            assert re.search(rf"\| `distill\.{name}\.{option}` \|[^\n]*\| `{re.escape(value(f.default))}`", page), (
                name,
                option,
            )
    assert all(f"`{v.name}`" in page for v in VARIABLES)


def test_every_command_of_the_readme_has_its_section_on_the_commands_page():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^\| `(edgekd [a-z ]+)` \|.*\(docs/commands\.md#([a-z-]+)\)", readme, re.M)
    page = (REPO / "docs" / "commands.md").read_text()
    headings = {h for h in re.findall(r"^## (edgekd [a-z ]+)$", page, re.M)}
    assert len(commands) >= 17
    for command, anchor in commands:
        assert command in headings and anchor == command.replace(" ", "-"), command


def test_the_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def test_the_failures_page_lists_every_exit_code_under_its_name():
    from flows.cli.exits import Exit

    page = (REPO / "docs" / "failures.md").read_text()
    for code in Exit:
        assert f"| {code.value} | `{code.name}` |" in page, code


def _docs_build(root: Path):
    """tests/run's own docs check (its mkdocs line, under its shell options), run in `root`."""
    import subprocess

    script = (REPO / "tests" / "run").read_text()
    line = next(s for s in script.splitlines() if "mkdocs build" in s and not s.lstrip().startswith("#"))
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{line}"], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_the_docs_check_fails_on_an_anchor_broken_on_purpose(tmp_path):
    import shutil

    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    assert _docs_build(tmp_path).returncode == 0  # today's docs build clean under the same check
    page = tmp_path / "docs" / "index.md"
    page.write_text(page.read_text() + "\nSee [nowhere](commands.md#no-such-heading).\n")
    broken = _docs_build(tmp_path)
    assert broken.returncode != 0
    assert "no-such-heading" in broken.stdout + broken.stderr
