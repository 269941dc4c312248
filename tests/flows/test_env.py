"""flows/infra/environment.py: the `team` section of params.yaml points every command at the team's servers, each
tool's own environment variable wins over it, and without either nothing changes."""

import pytest
import yaml

from components.config import ConfigError, load_config
from flows.infra import environment as env

pytestmark = pytest.mark.unit

TEAM = {
    "mlflow_tracking_uri": "http://mlflow.team:5000",
    "prefect_api_url": "http://prefect.team:4200/api",
    "database_url": "postgresql://edgekd@db.team:5432/edgekd",
}
VARS = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "EDGEKD_DATABASE_URL")


@pytest.fixture
def project(tmp_path, shipped_params):
    import os

    saved = dict(os.environ)  # env.configure sets process-wide variables: none may reach the next test
    for var in VARS:
        os.environ.pop(var, None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shipped_params()))
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)


def _params(root, team=None):
    params = yaml.safe_load((root / "params.yaml").read_text())
    params.pop("team", None)
    (root / "params.yaml").write_text(yaml.safe_dump(params | ({"team": team} if team is not None else {})))


def test_the_team_section_sets_each_tools_variable(project):
    import os

    _params(project, TEAM)
    env.configure(project)
    assert [os.environ[v] for v in VARS] == list(TEAM.values())


def test_a_variable_set_by_the_user_wins_over_the_team_section(project):
    import os

    _params(project, TEAM)
    os.environ["MLFLOW_TRACKING_URI"] = "http://elsewhere:5000"
    env.configure(project)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://elsewhere:5000"
    assert os.environ["PREFECT_API_URL"] == TEAM["prefect_api_url"]


def test_without_a_team_section_the_project_keeps_its_own_stores(project):
    import os

    _params(project)
    env.configure(project)
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{project.resolve() / 'mlruns' / 'mlflow.db'}"
    assert "PREFECT_API_URL" not in os.environ and "EDGEKD_DATABASE_URL" not in os.environ


@pytest.mark.parametrize(
    "key,value",
    [
        ("mlflow_tracking_uri", "mlflow.team:5000"),
        ("prefect_api_url", "http://prefect.team:4200"),
        ("database_url", "mysql://db.team/edgekd"),
        ("server", "http://x"),
    ],
)
def test_a_bad_team_setting_is_named_and_the_project_keeps_its_own_stores(project, key, value):
    import os

    _params(project, {key: value})
    with pytest.raises(ConfigError, match=rf"team\.{key}"):
        load_config(project / "params.yaml")
    env.configure(project)
    assert os.environ["MLFLOW_TRACKING_URI"].startswith("sqlite:")


def test_ui_with_a_tracking_server_names_its_url_instead_of_serving_a_store(project, capsys, monkeypatch, cli):
    _params(project, TEAM)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert cli(project, "ui") == 0  # returns at once: no `mlflow ui` exec'd in its place
    assert capsys.readouterr().out.strip() == f"MLflow UI of the tracking server: {TEAM['mlflow_tracking_uri']}"
