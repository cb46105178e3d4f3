"""A throw-away PostgreSQL server for the team-mode tests and benchmark.

``LocalPostgres.start()`` runs ``initdb`` into a temporary folder and ``pg_ctl start`` on a free
local port, with a password-protected role (TCP connections need the password, as a lab's
server would). PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user (or ``nobody``) through ``runuser``. Anything missing raises
:class:`PostgresUnavailable` with the reason, which the tests turn into a skip (or a failure
when ``GPO_VAE_REQUIRE_POSTGRES=1``, as CI sets after installing PostgreSQL).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROLE = "gpovae"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says why and how to fix it."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (PATH first, then Debian's layout, newest)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if not candidates:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
            "(or put its bin/ folder on PATH)"
        )
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unprivileged_user() -> str | None:
    """The user to run the server as: None when we are not root, else postgres or nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and neither a postgres nor a nobody user exists")


@dataclass
class LocalPostgres:
    """A running local server (see the module docstring); ``stop()`` removes everything."""

    root: Path
    port: int
    bin_dir: Path
    run_as: str | None
    password: str = "team-secret-do-not-print"
    databases: list[str] = field(default_factory=list)

    @classmethod
    def start(cls) -> LocalPostgres:
        try:
            import psycopg2  # noqa: F401  (what these helpers connect with)
            import sqlalchemy

            sqlalchemy.create_engine("postgresql://check@127.0.0.1/none")  # imports redun's driver
        except ImportError as err:
            raise PostgresUnavailable(f"{err}: pip install 'gpo-vae[postgres]'") from err
        bin_dir = find_bin_dir()
        run_as = _unprivileged_user()
        if run_as and not shutil.which("runuser"):
            raise PostgresUnavailable("running as root without runuser to drop privileges for PostgreSQL")
        root = Path(tempfile.mkdtemp(prefix="gpo-vae-pg-"))
        server = cls(root, _free_port(), bin_dir, run_as)
        try:
            server._init_and_start()
        except (subprocess.CalledProcessError, OSError) as err:
            log = server.root / "data" / "server.log"
            detail = log.read_text()[-2000:] if log.exists() else ""
            output = getattr(err, "stdout", "") or ""
            server.stop()
            raise PostgresUnavailable(f"PostgreSQL did not start: {err}\n{output[-2000:]}\n{detail}") from err
        return server

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        return subprocess.run(
            [*prefix, *args], check=True, capture_output=True, text=True, timeout=120, cwd=self.root
        )

    def _init_and_start(self) -> None:
        data, pwfile = self.root / "data", self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        os.chmod(self.root, 0o700)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            ROLE,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=ROLE, password=self.password, dbname=dbname
        )
        connection.autocommit = True
        return connection

    def create_database(self, name: str) -> str:
        """Create database ``name`` (dropping an old one); return its URI without credentials."""
        self.drop_database(name)
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return self.uri(name)

    def drop_database(self, name: str) -> None:
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def uri(self, name: str) -> str:
        """What goes into ``GPO_VAE_DB_URI``: host, port and database, never the password."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{name}"

    def credentials_env(self) -> dict[str, str]:
        """The environment redun reads the credentials from."""
        return {"REDUN_DB_USERNAME": ROLE, "REDUN_DB_PASSWORD": self.password}

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            try:
                self._run(
                    str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"
                )
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
