"""A throwaway PostgreSQL 15 cluster on loopback, in a temp dir, for the records tests.

initdb and the server refuse to run as root, so under root (CI) they run as the `postgres`
user. The cluster listens on 127.0.0.1 on a free port and on a Unix socket inside its own
directory; it is stopped and deleted at the end of the test session.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from sim.reaping import register

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)


class PgClusterError(RuntimeError):
    pass


def find_pg_bin() -> Path | None:
    for d in PG_BIN_DIRS:
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    bin_dir: Path
    root: Path
    port: int
    user: str
    run_as: pwd.struct_passwd | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        kw = {}
        if self.run_as is not None:
            kw = dict(user=self.run_as.pw_uid, group=self.run_as.pw_gid, extra_groups=[])
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(self.root)}
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=self.root, **kw)
        if check and proc.returncode != 0:
            raise PgClusterError(f"{' '.join(argv[:2])} failed ({proc.returncode}): "
                                 f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def init(self) -> None:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user, "-A", "trust",
                  "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                f"-c full_page_writes=off -c max_connections=50 -c shared_buffers=32MB")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
                  "-o", opts, "-w", "-t", "60", "start")
        # pg_ctl daemonizes the server (its own session): register it for the session's reaper
        register(self.postmaster_pid(), group=True)

    def postmaster_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop",
                  check=False)

    def create_database(self, name: str | None = None) -> str:
        """A fresh database for one test; returns its URL."""
        import psycopg2

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def log_tail(self, n_chars: int = 2000) -> str:
        try:
            return (self.root / "server.log").read_text()[-n_chars:]
        except OSError:
            return ""


def start_cluster() -> PgCluster:
    """initdb + start on a free loopback port (retried: another process may take the port)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise PgClusterError(f"PostgreSQL 15 binaries not found in {', '.join(PG_BIN_DIRS)}")
    run_as = None
    if os.geteuid() == 0:
        try:
            run_as = pwd.getpwnam("postgres")
        except KeyError:
            raise PgClusterError("running as root and there is no `postgres` user to run PostgreSQL as") from None
    root = Path(tempfile.mkdtemp(prefix="facehil-pg-"))
    if run_as is not None:
        os.chown(root, run_as.pw_uid, run_as.pw_gid)
    cluster = PgCluster(bin_dir, root, 0, "facehil", run_as)
    try:
        cluster.init()
        last: Exception | None = None
        for _ in range(3):
            cluster.port = _free_port()
            try:
                cluster.start()
                return cluster
            except PgClusterError as exc:
                last = exc
        raise PgClusterError(f"{last}\n{cluster.log_tail()}")
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise


@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL 15 cluster for this test session; skips when PostgreSQL 15 is not installed."""
    if find_pg_bin() is None:
        pytest.skip(f"PostgreSQL 15 (initdb, pg_ctl in {PG_BIN_DIRS[0]}) is not installed")
    try:
        cluster = start_cluster()
    except PgClusterError as exc:
        pytest.fail(f"cannot start a throwaway PostgreSQL cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, empty records database: a SQLite file, or a new database in the session's cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.sqlite'}"
    return request.getfixturevalue("pg_cluster").create_database()
