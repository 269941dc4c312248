"""The one way edgekd connects to PostgreSQL (the team's database: the promotion guard's advisory locks, the
team's health check and its set-up), and how a database URL is shown without its password."""

from __future__ import annotations

import re


def connect(url: str | None = None, *, timeout: float = 10, application_name: str = "edgekd", **params):
    """A psycopg2 connection in autocommit mode (advisory locks and CREATE DATABASE run outside transactions), to
    `url` or to the keyword `params` (host, port, user, password, dbname). psycopg2.Error when it cannot."""
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=int(timeout), application_name=application_name, **params)
    conn.autocommit = True
    return conn


def redact(url: str) -> str:
    """A database URL without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
