"""`edgekd team up|down|status`: the shared servers a small team (or a test) needs, on one machine.

Alone, each user has a SQLite MLflow store and a temporary Prefect server: nobody sees anyone else's runs, two
people can hold 'production' at once, and SQLite locks up under concurrent writers. A team needs one MLflow
registry, one Prefect API and one database for the promotion guard's advisory locks. `team up` starts:

- PostgreSQL (Debian's package) with the databases `mlflow`, `prefect` and `edgekd`: its superuser `edgekd`
  (password generated once, in TEAM_DIR/password) only sets it up; each server logs in as its own database's
  owner, members as `edgekd_member`, which reaches only the `edgekd` database (postgres.py);
- `mlflow server` on the `mlflow` database, proxying artifacts to TEAM_DIR/artifacts (or a shared bucket), with
  MLflow's basic auth and edgekd's roles (mlflow_auth.py; users: users.py);
- Prefect's server on the `prefect` database, with an auth string;

both behind TLS (tls.py), and writes TEAM_DIR/team.env, the settings clients source. `team down` stops them and
keeps the data: a later `up` finds the same registry and flow runs. Deleting TEAM_DIR deletes all of it.

Every server runs in its own session, so neither a Ctrl-C in the terminal nor the end of `up` stops it. Each
carries EDGEKD_TEAM_SERVER in its environment, which every process it starts inherits: `down` finds them by it,
including the workers `mlflow server` starts, which outlive it when it dies first.
"""

from flows.infra.team.servers import LABELS, down, status, up
from flows.infra.team.settings import PORT_FLAGS, TeamError, TeamSettings

__all__ = ["LABELS", "PORT_FLAGS", "TeamError", "TeamSettings", "down", "status", "up"]
