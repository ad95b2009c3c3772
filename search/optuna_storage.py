"""Where an Optuna study lives: a file in the run folder by default, or a shared database for many workers.

``storage`` values (the ``--storage`` flag):

- ``None``, ``""`` or ``"sqlite"``: SQLite file ``study.db`` in the run folder (``optuna-dashboard sqlite:///…``);
- ``"journal"``: Optuna journal file ``study.journal.log`` in the run folder (``optuna-dashboard FILE``);
- a path ending in ``.log`` or ``.journal``: that journal file (NFS-safe locking, several workers on one disk);
- ``redis://…``: a journal in Redis (needs the ``redis`` package);
- any other ``scheme://…``: a SQLAlchemy URL (``postgresql://user:pass@host/db`` with the ``psycopg`` driver,
  ``mysql+pymysql://…``, ``sqlite:////abs/path.db``), for several workers on several machines.

``$VAR`` / ``${VAR}`` in a URL are expanded from the environment, so ``--storage 'postgresql://u:${PGPASSWORD}@h/db'``
keeps the password out of ``config.yaml``; URLs written to disk or logs always have their password masked.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from prunegym.core.errors import UserError

__all__ = ["LOCAL_JOURNAL", "LOCAL_SQLITE", "StorageSpec", "open_storage", "redact_url", "resolve_storage"]

log = logging.getLogger(__name__)

LOCAL_SQLITE = "study.db"
LOCAL_JOURNAL = "study.journal.log"
_MASK = "***"


@dataclass(frozen=True)
class StorageSpec:
    """A resolved storage: what to open, how to show it, and whether it lives in the run folder.

    Args:
        kind: ``rdb``, ``journal-file`` or ``journal-redis``.
        target: the URL or file path to open (environment variables expanded, password included)
        display: the same with the password masked, safe for logs and ``config.yaml``.
        local: the storage is the run folder's own file (one worker; not shared)
    """

    kind: str
    target: str
    display: str
    local: bool

    @property
    def saved(self) -> str | None:
        """The ``--storage`` value to write into the run folder: it reopens this storage, wherever the folder
        moves, and carries no password."""
        if self.local:
            return None if self.kind == "rdb" else "journal"
        return self.display


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part masked (other strings, and a password given as
    ``$VAR``/``${VAR}``, unchanged)."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    authority, sep, path = rest.partition("/")
    if "@" not in authority:
        return url
    userinfo, host = authority.rsplit("@", 1)
    if ":" not in userinfo:
        return url
    user, password = userinfo.split(":", 1)
    if password.startswith("$"):
        return url  # an environment variable reference, not a secret
    return f"{scheme}://{user}:{_MASK}@{host}{sep}{path}"


def resolve_storage(storage: str | None, *, run_dir: Path) -> StorageSpec:
    """Interpret a ``--storage`` value (see the module doc) for the run folder ``run_dir``."""
    run_dir = Path(run_dir)
    value = (storage or "").strip()
    if value in ("", "sqlite"):
        path = (run_dir / LOCAL_SQLITE).resolve()
        return StorageSpec(kind="rdb", target=f"sqlite:///{path}", display=f"sqlite:///{path}", local=True)
    if value == "journal":
        path = (run_dir / LOCAL_JOURNAL).resolve()
        return StorageSpec(kind="journal-file", target=str(path), display=str(path), local=True)
    if _MASK in value:
        raise UserError(f"storage URL {value} has a masked password; pass the full URL again with --storage")
    expanded = os.path.expandvars(value)
    if "$" in expanded:
        raise UserError(f"storage URL {redact_url(value)} names an unset environment variable; export it first")
    if "://" not in expanded:
        if expanded.endswith((".log", ".journal")):
            path = Path(expanded).expanduser().resolve()
            return StorageSpec(kind="journal-file", target=str(path), display=str(path), local=False)
        raise UserError(
            f"storage {value!r} is neither a URL (postgresql://user:pass@host/db, sqlite:///file.db) nor a journal "
            "file (*.log); fix --storage or leave it out for a study.db in the run folder"
        )
    kind = "journal-redis" if expanded.startswith(("redis://", "rediss://")) else "rdb"
    return StorageSpec(kind=kind, target=expanded, display=redact_url(value), local=False)


def _engine_kwargs(url: str) -> dict:
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    if url.startswith("mysql"):
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {}


def open_storage(spec: StorageSpec, *, heartbeat_s: int = 60) -> BaseStorage:
    """Open (and create the tables of) the storage; a one-line :class:`UserError` when it cannot be reached.

    Shared SQL databases get Optuna's heartbeat: a trial whose worker died is marked FAIL once it has been silent
    for ``3 × heartbeat_s`` seconds (0 disables), so a crashed machine never leaves a study waiting on it.
    """
    try:
        if spec.kind == "journal-file":
            from optuna.storages.journal import JournalFileBackend

            Path(spec.target).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(spec.target))
        if spec.kind == "journal-redis":
            from optuna.storages.journal import JournalRedisBackend

            return optuna.storages.JournalStorage(JournalRedisBackend(spec.target))
        if spec.local:
            Path(spec.target.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        shared = not spec.local and not spec.target.startswith("sqlite")
        beat: dict = {}
        if shared and heartbeat_s:  # a trial whose worker died is failed after the grace period and run again once
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
            beat = {
                "heartbeat_interval": heartbeat_s,
                "grace_period": 3 * heartbeat_s,
                "heartbeat_stale_trial_callback": retry,
            }
        return _rdb_storage(spec.target, beat=beat)
    except ImportError as exc:
        found = re.search(r"No module named '([\w.]+)'", f"{exc} {exc.__cause__} {exc.__context__}")
        module = exc.name or (found.group(1) if found else "the database driver")
        hint = {
            "psycopg": "pip install 'prunegym[postgres]' (psycopg 3)",
            "psycopg2": "pip install psycopg2-binary, or write postgresql:// and pip install 'prunegym[postgres]'",
            "redis": "pip install redis",
        }.get(module.split(".")[0], f"install the driver that {spec.display.split(':', 1)[0]} names")
        raise UserError(f"storage {spec.display} needs the Python module '{module}'; {hint}") from exc
    except Exception as exc:  # SQLAlchemy/driver errors: bad URL, refused connection, bad password, ...
        first = _first_line(exc)
        if spec.target.startswith("sqlite"):
            raise UserError(
                f"cannot open SQLite storage {spec.display}: {first}; SQLite is for one worker on one machine: "
                "for several workers use --storage journal (one machine) or a PostgreSQL URL (many)"
            ) from exc
        raise UserError(
            f"cannot open storage {spec.display}: {first}; check the URL, that the server is running and reachable, "
            "and the credentials"
        ) from exc


def _rdb_storage(url: str, *, beat: dict, attempts: int = 5) -> BaseStorage:
    """``RDBStorage`` that survives several workers creating the schema of a new database at the same moment.

    Two processes issuing Optuna's ``CREATE TABLE`` together on a fresh PostgreSQL database make one of them fail
    with a unique-violation on the catalog (``pg_type_typname_nsp_index``); the tables exist once the other is
    done, so a short randomized back-off and a retry is all it takes. SQLite does the same with "table … already
    exists" or "database is locked" when several workers on one machine open a new file together.
    """
    import sqlalchemy.exc

    transient = ("already exists", "duplicate key", "database is locked", "UNIQUE constraint failed")

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **beat)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as exc:
            if attempt == attempts - 1 or not any(t in str(exc) for t in transient):
                raise
            log.info("another worker is creating the storage schema; retrying (%s)", _first_line(exc))
            time.sleep(0.2 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0].strip() if text else type(cause).__name__
