"""Where runs go: the MLflow store and experiment a config names, opened with one clear error."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager

from transferlab.errors import UserError
from transferlab.pipeline import project_root
from transferlab.tracking.identity import masked
from transferlab.tracking.processes import close_orphans

DEFAULT_URI = "sqlite:///mlflow.db"
SQLITE = "sqlite:///"


def sqlite_path(uri: str) -> str | None:
    """The file of a sqlite URI (relative or absolute), None for any other store."""
    return uri[len(SQLITE) :] if uri.startswith(SQLITE) else None


def tracking_uri(cfg) -> str:
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    # A relative sqlite path names the project's store wherever a stage runs: in a sweep's stage
    # cache or in a `dvc exp run --queue` workspace that DVC deletes afterwards.
    if (path := sqlite_path(uri)) and not path.startswith("/"):
        uri = SQLITE + str(project_root() / path)
    return uri


# MLflow retries a failed request 7 times over about 4 minutes (hosted servers rate-limit): a stage
# whose server died mid-run then hung for a quarter of an hour, a few minutes per request. These
# retries ride out a restart of a few seconds; a user's own settings win.
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def check_reachable(uri: str) -> None:
    """Fail in seconds, naming the URI, instead of MLflow's long retry loops (7 HTTP retries over
    about 4 minutes; 10 database connection attempts over about 100 s)."""
    if re.fullmatch(r"[\w.-]+:\d+/?", uri):  # MLflow would take it for a folder of files
        raise UserError(f"MLflow tracking URI {uri!r} has no scheme: write http://{uri} for a server")
    if why := unreachable(uri):
        raise UserError(
            f"MLflow tracking store {masked(uri)} is unreachable ({why}): start "
            "it, fix MLFLOW_TRACKING_URI / tracking.uri, or set tracking.enabled=false"
        )


def unreachable(uri: str) -> str | None:
    """Why a server or database store does not answer, or None (it does, or it is a file)."""
    from urllib.parse import urlsplit

    parts, scheme = urlsplit(uri), uri.split(":", 1)[0].split("+")[0]
    try:
        if scheme in ("http", "https"):
            for name, value in HTTP_RETRIES.items():
                os.environ.setdefault(name, value)
            import urllib.request

            # Credentials in the URI are MLflow's business; the health page needs none.
            health = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl().rstrip("/") + "/health"
            urllib.request.urlopen(health, timeout=5).close()
        elif scheme in DATABASE_PORTS and parts.hostname:
            import socket

            socket.create_connection(
                (parts.hostname, parts.port or DATABASE_PORTS[scheme]), timeout=5
            ).close()
        elif scheme == "postgresql":  # a local socket, where libpq finds it (PGHOST, PGPORT): ask it
            import psycopg

            try:
                psycopg.connect("postgresql" + uri[uri.index(":") :], connect_timeout=5).close()
            except psycopg.Error as err:
                return str(err).strip().splitlines()[0]
    except OSError as err:  # urllib's URLError included
        return str(getattr(err, "reason", err))
    return None


def server_gone(err: BaseException | None, uri: str) -> bool:
    """Whether `err` is MLflow giving up on a tracking server that stopped answering."""
    from mlflow.exceptions import MlflowException

    return (
        uri.startswith(("http://", "https://"))
        and isinstance(err, MlflowException)
        and str(err).startswith("API request to ")
    )


@contextmanager
def answering(uri: str, what: str):
    """One line instead of MLflow's chained tracebacks when the tracking server stops answering
    during `what` (a stage, a pipeline)."""
    try:
        yield
    except Exception as err:
        if not server_gone(err, uri):
            raise
        why = "connection refused" if "refused" in str(err).lower() else "no answer"
        raise UserError(
            f"MLflow tracking server {masked(uri)} stopped answering during {what} ({why}): start it "
            "again and rerun (the rerun marks FAILED the runs left RUNNING there)"
        ) from None


def open_store(cfg) -> str:
    """Point MLflow at the configured store and experiment (its id is returned), or fail with one
    clear message."""
    import mlflow

    uri = tracking_uri(cfg)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    name = cfg.tracking.experiment
    try:
        with _store_lock(uri):
            if uri.startswith("sqlite:") and mlflow.get_experiment_by_name(name) is None:
                # Artifacts next to the store, not under whichever directory the first run started in.
                location = (project_root() / "mlruns" / name).as_uri()
                mlflow.create_experiment(name, artifact_location=location)
            write_ahead_log(uri)
            experiment_id = mlflow.set_experiment(name).experiment_id
    except Exception as err:  # a bad store URI or an unreadable store
        raise UserError(
            f"cannot open MLflow tracking store {masked(uri)}: {str(err).splitlines()[0]}"
        ) from None
    close_orphans(experiment_id)
    return experiment_id


@contextmanager
def _store_lock(uri: str):
    """Processes that open one sqlite store at the same time (parallel sweep jobs, DVC queue
    workers) take turns: a new store's schema is created by whoever comes first, once."""
    if (path := sqlite_path(uri)) is None:
        yield
        return
    from filelock import FileLock

    with FileLock(path + ".lock", timeout=120):
        yield


def write_ahead_log(uri: str) -> None:
    """Put a sqlite database (MLflow's store, Optuna's study) in WAL mode; once: the mode is kept in
    the file. In sqlite's default mode a writer blocks every reader while it commits, and under load
    (parallel sweep or Slurm jobs on two busy cores) a reader gave up after MLflow's 20 s wait:
    "database is locked". With the write-ahead log, readers never wait for a writer and writers
    wait only for each other."""
    if (path := sqlite_path(uri)) is None:
        return
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(path, timeout=60)) as db:
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")


def retried_on_collision(call, attempts: int = 3):
    """`call()`, again when the store refused it on a unique key another process inserted between
    the store's lookup and its insert: MLflow looks a row up, then inserts it (datasets, aliases),
    so runs that log the same thing at the same moment collide. The failed attempt was rolled back
    whole; the next one finds the row."""
    import time

    from mlflow.exceptions import MlflowException

    for attempt in range(1, attempts + 1):
        try:
            return call()
        except MlflowException as error:  # PostgreSQL, sqlite and MySQL's words for the collision
            text = str(error).lower()
            if attempt == attempts or not any(
                word in text for word in ("duplicate key", "unique constraint", "duplicate entry")
            ):
                raise
            time.sleep(0.2 * attempt)
