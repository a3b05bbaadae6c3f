"""Private, throwaway RabbitMQ and MariaDB servers for tests, demos and benchmarks.

Each server runs from the Debian packages' binaries, in a folder of its own, on
free loopback ports, as the *current* user. The system-wide services (and their
config under /etc) are never used: they may be absent, denied by policy-rc.d, or
shared with other work on the machine.

Why the current user rather than the packages' `rabbitmq`/`mysql` users: the
Debian `/usr/sbin/rabbitmq-server` wrapper re-execs as `rabbitmq`, which then
needs every parent of the data folder to be traversable by that user (pytest's
tmp dirs and /root are 0700). Calling `/usr/lib/rabbitmq/bin/rabbitmq-server`
directly with HOME (hence the Erlang cookie) pointing into the node's own folder
sidesteps the problem entirely, for root and non-root alike.

Also the console script `rdb-devservers start|stop [--dir DIR]`.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
DEFAULT_USER = "rdb"
DEFAULT_PASSWORD = "rdbpass"
DEFAULT_DATABASE = "rdb"
DEFAULT_BASE_DIR = Path(".rdb-servers")

RABBITMQ_SERVER_BIN = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL_BIN = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
EPMD_BIN = "epmd"
MARIADBD_BIN = "mariadbd"
MARIADB_INSTALL_DB_BIN = "mariadb-install-db"

READINESS_POLL_INTERVAL_S = 0.2
READINESS_PROBE_TIMEOUT_S = 2.0
CTL_TIMEOUT_S = 120.0
INSTALL_DB_TIMEOUT_S = 120.0
ATEXIT_STOP_TIMEOUT_S = 15.0
KILL_WAIT_S = 10.0
EPMD_UNREGISTER_TIMEOUT_S = 5.0
EPMD_CMD_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 40
MARIADB_BUFFER_POOL_SIZE_MB = 256
MARIADB_LOG_FILE_SIZE_MB = 32
MARIADB_MAX_CONNECTIONS = 500
# Unix socket paths longer than this do not fit in sockaddr_un (108 bytes incl. NUL).
UNIX_SOCKET_PATH_MAX_BYTES = 100

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_DB_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")

# Servers started by this process and not detached; the atexit hook stops them
# so that an aborted test run does not leave brokers behind.
_LIVE_SERVERS: set["_PrivateServer"] = set()
_LIVE_LOCK = threading.Lock()

ReadinessProbe = Callable[[], None]  # raises while the server is not ready


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    Racy by nature (someone may grab it before the server binds it); the
    servers' startup reports a clear error if that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """True if nobody listens on the port.

    SO_REUSEADDR like the servers themselves use, otherwise TIME_WAIT leftovers
    of a just-killed server would make its port look busy.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK_HOST, port))
        except OSError:
            return False
        return True


def _tcp_accepts(port: int, timeout_s: float = READINESS_PROBE_TIMEOUT_S) -> bool:
    try:
        with socket.create_connection((LOOPBACK_HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    """True if pid exists and is not a fully exited zombie.

    Zombies count as dead: a server started by another process (e.g. by
    `rdb-devservers start`) is reparented to PID 1, which in containers often
    never reaps, so a plain kill(pid, 0) would say "alive" forever. But a
    multi-threaded zombie whose other threads are still exiting ("Zl") still
    holds its listening sockets, so it counts as alive until one thread is left.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # After the parenthesised comm (which may contain spaces): field 3 is the
    # state, field 20 the number of threads.
    fields = stat.rsplit(")", 1)[-1].split()
    state, num_threads = fields[0], int(fields[17])
    return state not in ("Z", "X") or num_threads > 1


def _pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"<{path}: not readable>"
    return "\n".join(content[-lines:])


def _clean_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """Environment for server processes without inherited RabbitMQ/Erlang settings.

    A developer's RABBITMQ_NODENAME or ERL_EPMD_PORT would otherwise silently
    point our node (or rabbitmqctl) at somebody else's.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RABBITMQ_", "ERL_", "MYSQL_", "MARIADB_")) and k != "NOTIFY_SOCKET"
    }
    env.update(overrides)
    return env


class _PrivateServer:
    """Process bookkeeping shared by the RabbitMQ and MariaDB wrappers.

    The server is started in a new session so that Ctrl-C in the terminal does
    not hit it before our atexit hook can stop it cleanly, and so that kill()
    can SIGKILL the whole process group (wrapper scripts, helpers) at once.
    The group leader's pid is written to `leader.pid` so another process (the
    `rdb-devservers stop` command) can find it again.
    """

    kind = "server"

    def __init__(self, folder: Path, name: str, port: int | None) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"name must match {_NAME_RE.pattern!r}, got {name!r}")
        self.name = name
        self.folder = folder.resolve()
        self._state_file = self.folder / "ports.json"
        saved = self._load_state()
        self.port: int = port or int(saved.get("port") or 0) or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._detached = False
        self._verified_pids: set[int] = set()
        self._leader_pid_file = self.folder / "leader.pid"
        self._stdout_file = self.folder / "server.out"

    # -- persisted state -------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self._state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _state(self) -> dict[str, Any]:
        return {"port": self.port}

    def _save_state(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._state_file.write_text(json.dumps(self._state(), indent=2) + "\n")

    # -- processes ---------------------------------------------------------------
    def _leader_signature(self) -> str:
        """A command-line fragment that identifies this server's leader process."""
        raise NotImplementedError

    def _is_ours(self, pid: int, signature: str) -> bool:
        """Guard against stale pid files whose pid now belongs to someone else.

        The verdict is remembered: a dying process's cmdline reads empty while
        it still holds its sockets.
        """
        if pid in self._verified_pids:
            return True
        if signature in _pid_cmdline(pid):
            self._verified_pids.add(pid)
            return True
        return False

    def _leader_pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        pid = _read_pid(self._leader_pid_file)
        return pid if pid is not None and self._is_ours(pid, self._leader_signature()) else None

    def _server_pids(self) -> list[int]:
        """Pids that must be gone before the server counts as stopped."""
        pid = self._leader_pid()
        return [pid] if pid is not None else []

    def is_running(self) -> bool:
        if self._proc is not None:
            self._proc.poll()  # reap, so our own child does not linger as a zombie
        return any(_pid_alive(pid) for pid in self._server_pids())

    def _spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._stdout_file, "ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                env=dict(env),
                start_new_session=True,
                close_fds=True,
            )
        self._leader_pid_file.write_text(f"{self._proc.pid}\n")
        self._detached = False
        self._remember()

    def _remember(self) -> None:
        with _LIVE_LOCK:
            _LIVE_SERVERS.add(self)

    def _forget(self) -> None:
        with _LIVE_LOCK:
            _LIVE_SERVERS.discard(self)

    def detach(self) -> None:
        """Let the server outlive this Python process (used by `rdb-devservers start`)."""
        self._detached = True
        self._forget()

    def _wait_gone(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None:
                self._proc.poll()
            if not self.is_running():
                return True
            time.sleep(0.1)
        return not self.is_running()

    def _terminate(self, pid: int | None, what: str, timeout_s: float) -> None:
        """SIGTERM the server, wait for it to go, SIGKILL it if it won't."""
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if not self._wait_gone(timeout_s):
            log.warning("%s did not stop within %.0f s; killing it", what, timeout_s)
            self.kill()

    def _reap(self) -> None:
        """Collect our child process (if we started it) and forget the server."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout=KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None
        self._forget()

    def _log_tails(self) -> str:
        return f"--- {self._stdout_file} ---\n{_tail(self._stdout_file)}"

    def _check_ports_free(self, ports: Sequence[int]) -> None:
        busy = [p for p in ports if not _port_is_free(p)]
        if busy:
            raise RuntimeError(
                f"{self.kind} {self.name}: port(s) {busy} on {LOOPBACK_HOST} already in use "
                f"(a leftover server from an earlier run? try `rdb-devservers stop --dir "
                f"{self.folder.parent}`)"
            )

    def _fail_start(self, why: str) -> RuntimeError:
        tails = self._log_tails()
        self.kill()
        return RuntimeError(f"{self.kind} {self.name} in {self.folder}: {why}\n{tails}")

    def _wait_ready(self, timeout_s: float, probe: ReadinessProbe) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: BaseException | None = None
        while True:
            if not self.is_running():
                raise self._fail_start(f"server process exited during startup (last probe error: {last_error!r})")
            try:
                probe()
                return
            except Exception as exc:  # noqa: BLE001 - any failure just means "not ready yet"
                last_error = exc
            if time.monotonic() >= deadline:
                raise self._fail_start(
                    f"not ready after {timeout_s:.1f} s (last probe error: {last_error!r})"
                )
            time.sleep(READINESS_POLL_INTERVAL_S)

    def _signal_group(self, sig: signal.Signals) -> None:
        """Signal the leader's process group (wrapper + VM + helpers) and each known server pid."""
        leader = self._leader_pid()
        if leader is not None and _pid_alive(leader):
            try:
                os.killpg(leader, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in self._server_pids():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        """SIGKILL the server and its helpers: simulates a crash; data is kept."""
        if self.is_running():
            log.info("killing %s %s (port %d)", self.kind, self.name, self.port)
        self._signal_group(signal.SIGKILL)
        self._wait_gone(KILL_WAIT_S)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        self._proc = None
        self._forget()

    def stop(self, timeout_s: float = 30.0) -> None:
        raise NotImplementedError

    def destroy(self) -> None:
        """Stop the server and delete its folder (data and logs)."""
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - destroying must not be blocked by a sick server
            log.exception("clean stop of %s %s failed; killing it", self.kind, self.name)
            self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def start(self, timeout_s: float = 60.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> "_PrivateServer":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()


class PrivateRabbitMQ(_PrivateServer):
    """A RabbitMQ node of its own: node name, AMQP/distribution/epmd ports, cookie, data.

    Everything listens on 127.0.0.1 only. The `rdb` user is created through
    `default_user` in rabbitmq.conf, which takes effect on the first boot only,
    so restarts keep whatever the tests changed.
    """

    kind = "RabbitMQ"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        name: str = "rdb",
        port: int | None = None,
        dist_port: int | None = None,
        epmd_port: int | None = None,
        cluster_with: "PrivateRabbitMQ | None" = None,
        extra_config: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(Path(base_dir) / f"rabbitmq-{name}", name, port)
        saved = self._load_state()
        if cluster_with is not None:
            if cluster_with.folder == self.folder:
                raise ValueError("cluster members need distinct names: each node needs a folder of its own")
            if epmd_port is not None and epmd_port != cluster_with.epmd_port:
                raise ValueError("cluster members must share the epmd port")
            epmd_port = cluster_with.epmd_port
        self.dist_port: int = dist_port or int(saved.get("dist_port") or 0) or free_port()
        self.epmd_port: int = epmd_port or int(saved.get("epmd_port") or 0) or free_port()
        self.cluster_with = cluster_with
        self.extra_config: dict[str, str] = dict(extra_config or {})
        self.node_name = f"rdb-{name}-{self.port}@localhost"
        self.user = DEFAULT_USER
        self.password = DEFAULT_PASSWORD
        self.amqp_url = f"amqp://{self.user}:{self.password}@{LOOPBACK_HOST}:{self.port}/%2F"
        self.home_dir = self.folder / "home"
        self.mnesia_base = self.folder / "mnesia"
        self.log_dir = self.folder / "log"
        self.config_file = self.folder / "rabbitmq.conf"
        self.pid_file = self.folder / "rabbitmq.pid"
        self._joined_marker = self.folder / "cluster-joined"

    def _state(self) -> dict[str, Any]:
        return {"port": self.port, "dist_port": self.dist_port, "epmd_port": self.epmd_port}

    @property
    def node_log_file(self) -> Path:
        return self.log_dir / f"{self.node_name}.log"

    def _env(self) -> dict[str, str]:
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        return _clean_env(
            {
                "HOME": str(self.home_dir),
                "RABBITMQ_NODENAME": self.node_name,
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": LOOPBACK_HOST,
                # An empty env file instead of /etc/rabbitmq/rabbitmq-env.conf.
                "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(self.config_file),
                "RABBITMQ_CONFIG_FILES": str(self.folder / "conf.d"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(self.mnesia_base),
                "RABBITMQ_LOG_BASE": str(self.log_dir),
                "RABBITMQ_PID_FILE": str(self.pid_file),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": loopback_dist,
                "RABBITMQ_CTL_ERL_ARGS": loopback_dist,
                # 0/0 = an ephemeral port for each rabbitmqctl run, so concurrent
                # runs never fight over the default 35672..35682 range.
                "RABBITMQ_CTL_DIST_PORT_MIN": "0",
                "RABBITMQ_CTL_DIST_PORT_MAX": "0",
                "ERL_CRASH_DUMP": str(self.folder / "erl_crash.dump"),
            }
        )

    def _write_files(self) -> None:
        for folder in (self.folder, self.home_dir, self.mnesia_base, self.log_dir, self.folder / "conf.d"):
            folder.mkdir(parents=True, exist_ok=True)
        cookie = self.home_dir / ".erlang.cookie"
        if self.cluster_with is not None:
            wanted = (self.cluster_with.home_dir / ".erlang.cookie").read_text()
        elif cookie.exists():
            wanted = cookie.read_text()
        else:
            wanted = secrets.token_hex(20).upper()
        if not cookie.exists() or cookie.read_text() != wanted:
            if cookie.exists():
                cookie.chmod(0o600)
            cookie.write_text(wanted)
        cookie.chmod(0o400)  # Erlang refuses cookies readable by others.
        (self.folder / "rabbitmq-env.conf").write_text("")
        (self.folder / "enabled_plugins").write_text("[].\n")
        settings = {
            "listeners.tcp.1": f"{LOOPBACK_HOST}:{self.port}",
            "loopback_users": "none",
            "default_vhost": "/",
            "default_user": self.user,
            "default_pass": self.password,
            "default_permissions.configure": ".*",
            "default_permissions.read": ".*",
            "default_permissions.write": ".*",
            "default_user_tags.administrator": "true",
            "log.file.level": "info",
            **self.extra_config,
        }
        self.config_file.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))

    def _server_pids(self) -> list[int]:
        pids = super()._server_pids()
        beam = _read_pid(self.pid_file)  # written by RabbitMQ itself; outlives a kill()
        if beam is not None and self._is_ours(beam, f"-home {self.home_dir} "):
            pids.append(beam)
        return pids

    def _leader_signature(self) -> str:
        return str(RABBITMQ_SERVER_BIN)

    def _log_tails(self) -> str:
        return f"{super()._log_tails()}\n--- {self.node_log_file} ---\n{_tail(self.node_log_file)}"

    def _probe(self) -> None:
        import pika  # local: only the broker needs it

        if not _tcp_accepts(self.port):
            raise ConnectionRefusedError(f"{LOOPBACK_HOST}:{self.port} not accepting yet")
        params = pika.URLParameters(
            f"{self.amqp_url}?connection_attempts=1&socket_timeout={READINESS_PROBE_TIMEOUT_S}"
            f"&blocked_connection_timeout={READINESS_PROBE_TIMEOUT_S}"
        )
        connection = pika.BlockingConnection(params)
        connection.close()

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the node and block until a real AMQP login as `rdb` works."""
        if self.is_running():
            raise RuntimeError(f"RabbitMQ node {self.node_name} is already running")
        self._check_ports_free([self.port, self.dist_port])
        self._write_files()
        self._save_state()
        t0 = time.monotonic()
        log.info(
            "starting RabbitMQ node %s on port %d (dist %d, epmd %d) in %s ...",
            self.node_name, self.port, self.dist_port, self.epmd_port, self.folder,
        )
        self._spawn([str(RABBITMQ_SERVER_BIN)], self._env())
        self._wait_ready(timeout_s, self._probe)
        if self.cluster_with is not None and not self._joined_marker.exists():
            self._join_cluster(timeout_s)
        log.info("RabbitMQ node %s ready in %.1f s", self.node_name, time.monotonic() - t0)

    def _join_cluster(self, timeout_s: float) -> None:
        assert self.cluster_with is not None
        other = self.cluster_with.node_name
        log.info("joining RabbitMQ node %s to cluster of %s ...", self.node_name, other)
        self.ctl("stop_app")
        self.ctl("reset")
        self.ctl("join_cluster", other)
        self.ctl("start_app")
        self._joined_marker.write_text(other + "\n")
        self._wait_ready(timeout_s, self._probe)

    def ctl(self, *args: str, quiet: bool = True, timeout_s: float = CTL_TIMEOUT_S) -> str:
        """Run rabbitmqctl against this node (same cookie, node name and epmd port); return stdout.

        `quiet` adds -q so the output is the data, not the banner lines.
        """
        argv = [str(RABBITMQCTL_BIN), "-n", self.node_name, *(["-q"] if quiet else []), *args]
        result = subprocess.run(
            argv,
            env=self._env(),
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed (exit {result.returncode}) on {self.node_name}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _epmd(self, *args: str) -> str:
        result = subprocess.run(
            [EPMD_BIN, "-port", str(self.epmd_port), *args],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10.0,
            check=False,
        )
        return result.stdout + result.stderr

    def _kill_epmd(self, timeout_s: float = EPMD_UNREGISTER_TIMEOUT_S) -> None:
        """Stop our private epmd unless other nodes (cluster peers) still use it.

        epmd refuses -kill while any node is registered, and our node's
        registration can lag its exit briefly, so retry for a little while.
        """
        short_name = self.node_name.split("@", 1)[0]
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                out = self._epmd("-kill")
                if "not allowed" not in out:
                    return
                names = re.findall(r"^name (\S+) at port", self._epmd("-names"), re.MULTILINE)
                if any(n != short_name for n in names) or time.monotonic() >= deadline:
                    log.debug("leaving epmd on port %d running (registered: %s)", self.epmd_port, names)
                    return
                time.sleep(0.2)
        except (OSError, subprocess.TimeoutExpired):
            log.debug("could not stop epmd on port %d", self.epmd_port, exc_info=True)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop cleanly (SIGTERM makes RabbitMQ shut down gracefully); data and ports are kept."""
        if self.is_running():
            log.info("stopping RabbitMQ node %s (port %d) ...", self.node_name, self.port)
            pids = self._server_pids()
            # the VM if known, else the wrapper script
            self._terminate(pids[-1] if pids else None, f"RabbitMQ node {self.node_name}", timeout_s)
        self._reap()
        self._kill_epmd()

    def kill(self) -> None:
        """SIGKILL the node (a crash, for fault tests); its private epmd stays up, as after a real crash."""
        was_ours = self._proc is not None and not self._detached
        super().kill()
        if was_ours:
            self._remember()  # so the atexit hook still stops the epmd if nobody calls stop()/destroy()


class PrivateMariaDB(_PrivateServer):
    """A mariadbd of its own with database `rdb` and user `rdb` (all privileges, incl. CREATE DATABASE).

    Tuned for throwaway use: innodb_flush_log_at_trx_commit=2 still survives a
    SIGKILL of the server (only an OS crash loses the last second), which is
    all fault tests can do here.
    """

    kind = "MariaDB"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        name: str = "rdb",
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(Path(base_dir) / f"mariadb-{name}", name, port)
        self.extra_args: list[str] = list(extra_args)  # appended to mariadbd's command line, e.g. --ssl-ca=...
        self.user = DEFAULT_USER
        self.password = DEFAULT_PASSWORD
        self.database = DEFAULT_DATABASE
        self.url = f"mysql+pymysql://{self.user}:{self.password}@{LOOPBACK_HOST}:{self.port}/{self.database}"
        self.root_url = f"mysql+pymysql://root@{LOOPBACK_HOST}:{self.port}/"
        self.data_dir = self.folder / "data"
        self.pid_file = self.folder / "mariadbd.pid"
        self.error_log = self.folder / "error.log"
        socket_path = self.folder / "mariadbd.sock"
        if len(str(socket_path).encode()) > UNIX_SOCKET_PATH_MAX_BYTES:
            socket_path = Path("/tmp") / f"rdb-mariadbd-{self.port}.sock"
        self.socket_path = socket_path

    def _log_tails(self) -> str:
        return f"{super()._log_tails()}\n--- {self.error_log} ---\n{_tail(self.error_log)}"

    def _leader_signature(self) -> str:
        return f"--datadir={self.data_dir} "

    def _user_args(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; as non-root --user is ignored anyway.
        return ["--user=root"] if os.geteuid() == 0 else []

    def _install(self) -> None:
        if (self.data_dir / "mysql").is_dir():
            return
        shutil.rmtree(self.data_dir, ignore_errors=True)  # half-done earlier attempt
        self.data_dir.mkdir(parents=True)
        t0 = time.monotonic()
        log.info("initialising MariaDB data directory %s ...", self.data_dir)
        install_log = self.folder / "install-db.log"
        with open(install_log, "wb") as out:
            result = subprocess.run(
                [
                    MARIADB_INSTALL_DB_BIN,
                    "--no-defaults",
                    f"--datadir={self.data_dir}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                    f"--innodb-log-file-size={MARIADB_LOG_FILE_SIZE_MB}M",
                    *self._user_args(),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                env=_clean_env({}),
                timeout=INSTALL_DB_TIMEOUT_S,
                check=False,
            )
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise RuntimeError(
                f"mariadb-install-db failed (exit {result.returncode}) for {self.folder}:\n{_tail(install_log)}"
            )
        log.info("MariaDB data directory initialised in %.1f s", time.monotonic() - t0)

    def _connect_root(self, database: str | None = None) -> Any:
        import pymysql  # local: only the database needs it

        return pymysql.connect(
            host=LOOPBACK_HOST,
            port=self.port,
            user="root",
            password="",
            database=database,
            connect_timeout=int(READINESS_PROBE_TIMEOUT_S),
            charset="utf8mb4",
            autocommit=True,
        )

    def _probe(self) -> None:
        if not _tcp_accepts(self.port):
            raise ConnectionRefusedError(f"{LOOPBACK_HOST}:{self.port} not accepting yet")
        self._connect_root().close()

    def _ensure_user_and_database(self) -> None:
        """Idempotent, so it also repairs an instance whose first start was interrupted."""
        conn = self._connect_root()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}` CHARACTER SET utf8mb4")
                for host in ("%", "localhost"):
                    cur.execute("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (self.user, host, self.password))
                    cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (self.user, host))
        finally:
            conn.close()

    def start(self, timeout_s: float = 60.0) -> None:
        """Initialise on first use, start mariadbd and block until `rdb` can log in."""
        if self.is_running():
            raise RuntimeError(f"MariaDB {self.name} on port {self.port} is already running")
        self._check_ports_free([self.port])
        self.folder.mkdir(parents=True, exist_ok=True)
        self._save_state()
        t0 = time.monotonic()
        self._install()
        log.info("starting MariaDB %s on port %d in %s ...", self.name, self.port, self.folder)
        self._spawn(
            [
                MARIADBD_BIN,
                "--no-defaults",
                f"--datadir={self.data_dir}",
                f"--socket={self.socket_path}",
                f"--port={self.port}",
                f"--bind-address={LOOPBACK_HOST}",
                f"--pid-file={self.pid_file}",
                f"--log-error={self.error_log}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
                f"--innodb-buffer-pool-size={MARIADB_BUFFER_POOL_SIZE_MB}M",
                f"--innodb-log-file-size={MARIADB_LOG_FILE_SIZE_MB}M",
                "--innodb-flush-log-at-trx-commit=2",
                f"--max-connections={MARIADB_MAX_CONNECTIONS}",
                *self._user_args(),
                *self.extra_args,
            ],
            _clean_env({}),
        )
        self._wait_ready(timeout_s, self._probe)
        self._ensure_user_and_database()
        log.info("MariaDB %s ready in %.1f s", self.name, time.monotonic() - t0)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM = clean InnoDB shutdown; data and port are kept for the next start()."""
        if self.is_running():
            log.info("stopping MariaDB %s (port %d) ...", self.name, self.port)
            self._terminate(self._leader_pid(), f"MariaDB {self.name}", timeout_s)
        self._reap()

    def create_database(self, name: str) -> str:
        """Create an empty database (dropping any previous one of that name) and return its URL.

        Dropping first keeps reruns against a kept-alive server deterministic.
        """
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"database name must match {_DB_NAME_RE.pattern!r}, got {name!r}")
        conn = self._connect_root()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()
        return f"mysql+pymysql://{self.user}:{self.password}@{LOOPBACK_HOST}:{self.port}/{name}"


@atexit.register
def _stop_leftovers() -> None:
    """Stop servers this process started and did not detach, e.g. after a crashed test session."""
    with _LIVE_LOCK:
        leftovers = list(_LIVE_SERVERS)
    for server in leftovers:
        try:
            server.stop(timeout_s=ATEXIT_STOP_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            try:
                server.kill()
            except Exception:  # noqa: BLE001
                pass


# -- console script ---------------------------------------------------------------

_CLI_STATE_FILE = "devservers.json"
_CLI_ENV_FILE = "env.sh"


def _cli_start(base_dir: Path, timeout_s: float) -> int:
    state_file = base_dir / _CLI_STATE_FILE
    if state_file.exists():
        rabbit, db = _cli_servers(base_dir)
        if rabbit.is_running() or db.is_running():
            print(
                f"rdb-devservers: servers from {base_dir} are already running; "
                f"run `rdb-devservers stop --dir {base_dir}` first",
                file=sys.stderr,
            )
            return 1
    base_dir.mkdir(parents=True, exist_ok=True)
    rabbit = PrivateRabbitMQ(base_dir)
    db = PrivateMariaDB(base_dir)
    try:
        db.start(timeout_s)
        rabbit.start(timeout_s)
    except Exception as exc:  # noqa: BLE001 - turned into exit code 1 with the message
        for server in (rabbit, db):
            server.kill()
        print(f"rdb-devservers: start failed: {exc}", file=sys.stderr)
        return 1
    rabbit.detach()
    db.detach()
    state_file.write_text(json.dumps({"rabbitmq": {"name": rabbit.name}, "mariadb": {"name": db.name}}) + "\n")
    lines = f"export RDB_AMQP_URL='{rabbit.amqp_url}'\nexport RDB_DB_URL='{db.url}'\n"
    (base_dir / _CLI_ENV_FILE).write_text(lines)
    print(lines, end="")
    print(f"# written to {base_dir / _CLI_ENV_FILE}; stop with: rdb-devservers stop --dir {base_dir}", file=sys.stderr)
    return 0


def _cli_servers(base_dir: Path) -> tuple[PrivateRabbitMQ, PrivateMariaDB]:
    state = json.loads((base_dir / _CLI_STATE_FILE).read_text())
    return (
        PrivateRabbitMQ(base_dir, name=state["rabbitmq"]["name"]),
        PrivateMariaDB(base_dir, name=state["mariadb"]["name"]),
    )


def _cli_stop(base_dir: Path, purge: bool) -> int:
    if not (base_dir / _CLI_STATE_FILE).exists():
        print(f"rdb-devservers: nothing started in {base_dir} (no {_CLI_STATE_FILE})", file=sys.stderr)
        return 1
    failed = False
    for server in _cli_servers(base_dir):
        try:
            server.destroy() if purge else server.stop()
        except Exception as exc:  # noqa: BLE001
            print(f"rdb-devservers: stopping {server.kind} failed: {exc}", file=sys.stderr)
            failed = True
    if failed:
        return 1
    (base_dir / _CLI_STATE_FILE).unlink(missing_ok=True)
    (base_dir / _CLI_ENV_FILE).unlink(missing_ok=True)
    if purge:
        try:
            base_dir.rmdir()
        except OSError:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """`rdb-devservers start|stop [--dir DIR]`: private RabbitMQ + MariaDB for local work."""
    parser = argparse.ArgumentParser(
        prog="rdb-devservers",
        description="Start/stop a private RabbitMQ and MariaDB on free loopback ports.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (("start", "start both servers in the background, write DIR/env.sh"),
                               ("stop", "stop the servers started by `start` in DIR")):
        p = sub.add_parser(command, help=help_text)
        p.add_argument("--dir", type=Path, default=DEFAULT_BASE_DIR,
                       help=f"folder for data, logs and pid files (default: ./{DEFAULT_BASE_DIR})")
        if command == "start":
            p.add_argument("--timeout-s", type=float, default=120.0, help="startup deadline per server")
        else:
            p.add_argument("--purge", action="store_true", help="also delete data and logs")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        logging.getLogger("pika").setLevel(logging.WARNING)  # one INFO line per socket event
    base_dir = args.dir.resolve()
    if args.command == "start":
        return _cli_start(base_dir, args.timeout_s)
    return _cli_stop(base_dir, args.purge)


if __name__ == "__main__":
    sys.exit(main())
