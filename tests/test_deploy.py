"""deploy/ against the code: the same broker names and arguments, ports and commands.

The static tests parse each file (JSON, YAML, the systemd unit by hand) and compare it
with what the code declares and accepts. The server test imports the definitions into a
private RabbitMQ and runs a real worker and client as the least-privileged users.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
import yaml

from rdb_client.protocol import DEFAULT_QUEUE, BrokerNames
from rdb_worker import cli, recording, transport
from rdb_worker.transport import DEFAULT_DELIVERY_LIMIT
from schema import cli as schema_cli

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DEFINITIONS = DEPLOY / "rabbitmq-definitions.json"
UNIT = DEPLOY / "systemd" / "rdb-worker@.service"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "kubernetes"
QUEUE = "rdb.requests"
METRICS_PORT = 9464
NAMES = BrokerNames(QUEUE)


# --- helpers ---------------------------------------------------------------------------


class RecordingChannel:
    """Stands in for a pika channel: writes down what declare_topology declares."""

    def __init__(self) -> None:
        self.exchanges: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}
        self.bindings: set[tuple[str, str, str]] = set()

    def exchange_declare(self, exchange: str, exchange_type: str = "direct", passive: bool = False,
                         durable: bool = False, auto_delete: bool = False, internal: bool = False,
                         arguments: dict[str, Any] | None = None) -> None:
        assert not passive
        self.exchanges[exchange] = {"type": exchange_type, "durable": durable, "auto_delete": auto_delete,
                                    "internal": internal, "arguments": arguments or {}}

    def queue_declare(self, queue: str, passive: bool = False, durable: bool = False, exclusive: bool = False,
                      auto_delete: bool = False, arguments: dict[str, Any] | None = None) -> None:
        assert not passive and not exclusive
        self.queues[queue] = {"durable": durable, "auto_delete": auto_delete, "arguments": arguments or {}}

    def queue_bind(self, queue: str, exchange: str, routing_key: str | None = None,
                   arguments: dict[str, Any] | None = None) -> None:
        assert not arguments
        self.bindings.add((exchange, queue, routing_key if routing_key is not None else queue))


def declared_topology() -> RecordingChannel:
    """What a worker with default flags declares for rdb.requests."""
    channel = RecordingChannel()
    transport.declare_topology(channel, NAMES, DEFAULT_DELIVERY_LIMIT,  # type: ignore[arg-type]
                               recording.stream_arguments())
    return channel


def definitions() -> dict[str, Any]:
    return json.loads(DEFINITIONS.read_text())


def permissions(user: str) -> dict[str, str]:
    (perm,) = [p for p in definitions()["permissions"] if p["user"] == user]
    assert perm["vhost"] == "/"
    return perm


def matches(regex: str, name: str) -> bool:
    # RabbitMQ matches permission regexes unanchored (re:run); the file anchors them itself.
    return bool(regex) and re.search(regex, name) is not None


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit: sections of (key, value), keys may repeat; comments and blanks skipped."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def unit_value(section: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in section if k == key]
    assert len(values) == 1, f"{key} appears {len(values)} times"
    return values[0]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def k8s_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def k8s_worker_container() -> dict[str, Any]:
    (deployment,) = k8s_docs("worker-deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def dockerfile_instruction(name: str) -> list[str]:
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith(name + " ")]
    assert len(lines) == 1, f"{name} appears {len(lines)} times in the Dockerfile"
    return json.loads(lines[0][len(name) + 1:])


def worker_commands() -> dict[str, list[str]]:
    """Every rdb-worker command line the deploy files run, as argv."""
    service = parse_unit(UNIT)["Service"]
    exec_start = shlex.split(unit_value(service, "ExecStart").replace("%i", QUEUE))
    c = k8s_worker_container()
    return {
        "systemd": exec_start,
        "compose": list(compose()["services"]["worker"]["command"]),
        "kubernetes": list(c.get("command", [])) + list(c.get("args", [])),
        "dockerfile": dockerfile_instruction("CMD"),
    }


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# --- the definitions file --------------------------------------------------------------


def test_definitions_declare_exactly_what_the_worker_declares() -> None:
    want = declared_topology()
    defs = definitions()
    assert [v["name"] for v in defs["vhosts"]] == ["/"]
    assert {e["vhost"] for e in defs["exchanges"]} | {q["vhost"] for q in defs["queues"]} == {"/"}

    exchanges = {e["name"]: {k: e[k] for k in ("type", "durable", "auto_delete", "internal", "arguments")}
                 for e in defs["exchanges"]}
    assert exchanges == want.exchanges
    queues = {q["name"]: {k: q[k] for k in ("durable", "auto_delete", "arguments")} for q in defs["queues"]}
    assert queues == want.queues
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]}
    assert bindings == want.bindings
    assert all(b["destination_type"] == "queue" and not b["arguments"] for b in defs["bindings"])


def test_definitions_use_the_protocol_names_and_arguments() -> None:
    """The same thing spelled out: a reader of the JSON sees these names and values."""
    queues = {q["name"]: q for q in definitions()["queues"]}
    assert queues[NAMES.queue]["arguments"] == transport.queue_arguments(NAMES, DEFAULT_DELIVERY_LIMIT)
    assert queues[NAMES.queue]["arguments"]["x-delivery-limit"] == DEFAULT_DELIVERY_LIMIT
    assert queues[NAMES.dead_letter_queue]["arguments"] == {"x-queue-type": "quorum"}
    assert queues[NAMES.record_stream]["arguments"] == recording.stream_arguments()
    assert {e["name"] for e in definitions()["exchanges"]} == {NAMES.exchange, NAMES.dead_letter_exchange}
    assert DEFAULT_QUEUE == QUEUE


def test_worker_records_by_default_with_the_stream_arguments_of_the_file() -> None:
    from rdb_worker.worker import Worker

    worker = Worker("amqp://u:p@127.0.0.1:1/%2F", "mysql+pymysql://u:p@127.0.0.1:1/db", queue=QUEUE)
    assert worker.record
    assert worker.consumer.record_arguments == recording.stream_arguments()
    assert worker.consumer.delivery_limit == DEFAULT_DELIVERY_LIMIT
    parsed = cli._parser().parse_args([])
    assert parsed.record and parsed.delivery_limit == DEFAULT_DELIVERY_LIMIT


def test_definitions_users_have_placeholder_hashes_rabbitmq_accepts() -> None:
    users = {u["name"]: u for u in definitions()["users"]}
    assert set(users) == {"rdb-scheduler", "rdb-worker", "rdb-monitor", "rdb-replay"}
    for user in users.values():
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        assert "PLACEHOLDER" in user["password_hash"]
        assert len(base64.b64decode(user["password_hash"], validate=True)) == 4 + 32  # salt + SHA-256
        assert user["tags"] == []  # no management or administrator access
    assert {p["user"] for p in definitions()["permissions"]} == set(users)


OTHER_DEPLOYMENT = BrokerNames("rdb.requests2")
ALL_NAMES = [NAMES.queue, NAMES.exchange, NAMES.dead_letter_exchange, NAMES.dead_letter_queue, NAMES.record_stream]


def _allowed(regex: str) -> set[str]:
    candidates = ALL_NAMES + ["amq.default", "amq.gen-AbC123_x", "amq.direct", "rdb", "rdb.requestsX",
                              OTHER_DEPLOYMENT.queue, OTHER_DEPLOYMENT.exchange, OTHER_DEPLOYMENT.dead_letter_queue,
                              "prefix.rdb.requests", "rdb.requests.exchange.evil"]
    return {name for name in candidates if matches(regex, name)}


def test_scheduler_permissions_are_the_least_the_client_needs() -> None:
    perm = permissions("rdb-scheduler")
    # exchange_declare(X.exchange) and queue_declare('', exclusive) -> amq.gen-*.
    assert _allowed(perm["configure"]) == {NAMES.exchange, "amq.gen-AbC123_x"}
    # basic_publish to X.exchange only (not the default exchange: no direct writes to queues).
    assert _allowed(perm["write"]) == {NAMES.exchange}
    # basic_consume of its own reply queue only (exclusive queues can't be read by others).
    assert _allowed(perm["read"]) == {"amq.gen-AbC123_x"}


def test_worker_permissions_are_the_least_the_worker_needs() -> None:
    perm = permissions("rdb-worker")
    # It declares the two exchanges, the three queues.
    assert _allowed(perm["configure"]) == set(ALL_NAMES)
    # queue.bind needs write on the queue; a queue with a DLX needs write on the DLX;
    # replies and records go through the default exchange (amq.default).
    assert _allowed(perm["write"]) == {NAMES.queue, NAMES.dead_letter_queue, NAMES.dead_letter_exchange,
                                       "amq.default"}
    # basic_consume of X; queue.bind needs read on the source exchanges; a queue with a
    # DLX needs read on itself.
    assert _allowed(perm["read"]) == {NAMES.queue, NAMES.exchange, NAMES.dead_letter_exchange}


def test_replay_permissions_read_the_record_and_publish_like_a_scheduler() -> None:
    perm = permissions("rdb-replay")
    # show/dry-run: consume the record stream; publish: what a scheduler's client does.
    assert _allowed(perm["configure"]) == {NAMES.exchange, "amq.gen-AbC123_x"}
    assert _allowed(perm["write"]) == {NAMES.exchange}
    assert _allowed(perm["read"]) == {NAMES.record_stream, "amq.gen-AbC123_x"}


def test_monitor_user_has_no_permissions() -> None:
    perm = permissions("rdb-monitor")
    assert perm["configure"] == perm["write"] == perm["read"] == ""


# --- the systemd unit ------------------------------------------------------------------


def test_systemd_unit() -> None:
    unit = parse_unit(UNIT)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert unit_value(service, "ExecStart") == (
        f"/usr/local/bin/rdb-worker --queue %i --processes 2 --metrics-port {METRICS_PORT}"
    )
    assert unit_value(service, "EnvironmentFile").startswith("/etc/")
    assert unit_value(service, "Restart") == "on-failure"
    assert unit_value(service, "KillSignal") == "SIGTERM"
    # Only the supervisor gets systemd's SIGTERM: a child that got two would exit at once.
    assert unit_value(service, "KillMode") == "mixed"
    # Longer than a worker's drain (60 s in Worker._drain) and the supervisor's wait for a child.
    assert int(unit_value(service, "TimeoutStopSec")) >= 90
    assert not [k for k, _ in service if k in ("Environment", "ExecStartPre", "ExecStartPost")], \
        "secrets belong in the EnvironmentFile"
    assert unit_value(unit["Install"], "WantedBy") == "multi-user.target"
    text = UNIT.read_text()
    assert f"127.0.0.1:{METRICS_PORT}/healthz" in text or f"127.0.0.1:{METRICS_PORT}/readyz" in text
    assert "RDB_AMQP_URL" in text and "RDB_DB_URL" in text


# --- docker compose and the Dockerfile -------------------------------------------------


def test_compose_services() -> None:
    services = compose()["services"]
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.10")
    assert services["mariadb"]["image"] == "mariadb:10.11"
    assert services["schema"]["command"] == ["rdb-schema", "upgrade"]
    schema_cli._parser().parse_args(services["schema"]["command"][1:])
    for name in ("schema", "worker"):
        assert services[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert (COMPOSE.parent / services[name]["build"]["context"] / services[name]["build"]["dockerfile"]).is_file()

    worker = services["worker"]
    assert worker["command"][0] == "rdb-worker"
    assert flag_value(worker["command"], "--queue") == QUEUE
    assert int(flag_value(worker["command"], "--metrics-port")) == METRICS_PORT
    # --scale needs replicas that are all alike: no fixed name, no host port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["depends_on"]["schema"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert worker["depends_on"]["mariadb"]["condition"] == "service_healthy"
    assert worker["stop_signal"] == "SIGTERM"
    assert set(worker["environment"]) == {"RDB_AMQP_URL", "RDB_DB_URL"}
    assert worker["environment"]["RDB_AMQP_URL"].startswith("amqp://rdb-worker:${")
    assert any(f"127.0.0.1:{METRICS_PORT}/readyz" in part for part in worker["healthcheck"]["test"])
    for name in ("rabbitmq", "mariadb"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"

    # The broker loads the definitions rendered from deploy/rabbitmq-definitions.json.
    assert "./rabbitmq-definitions.json:/in/definitions.json:ro" in services["broker-definitions"]["volumes"]
    assert "load_definitions" in services["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    assert services["rabbitmq"]["depends_on"]["broker-definitions"]["condition"] == "service_completed_successfully"


def test_compose_secrets_come_from_env_not_literals() -> None:
    for name, service in compose()["services"].items():
        env = service.get("environment", {})
        for key, value in env.items():
            if "PASSWORD" in key or "://" in str(value):
                assert "${" in str(value), f"{name}.{key} holds a literal secret"
        command = service.get("command", [])
        if isinstance(command, list) and command[:1] != ["python"]:
            assert not any("://" in part for part in command), f"{name}: a URL on its command line"


def _render_compose_definitions(tmp_path: Path, passwords: dict[str, str]) -> Path:
    """Run the compose file's broker-definitions script, with its paths moved under tmp_path."""
    script = compose()["services"]["broker-definitions"]["command"][2]
    out = tmp_path / "rendered.json"
    script = script.replace("/in/definitions.json", str(DEFINITIONS)).replace("/out/definitions.json", str(out))
    saved = dict(os.environ)
    try:
        os.environ.update(passwords)
        exec(compile(script, "broker-definitions", "exec"), {})  # noqa: S102 - our own file's script
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return out


COMPOSE_PASSWORDS = {
    "RDB_SCHEDULER_AMQP_PASSWORD": "sched-pw-1",
    "RDB_WORKER_AMQP_PASSWORD": "worker-pw-2",
    "RDB_MONITOR_AMQP_PASSWORD": "monitor-pw-3",
    "RDB_ADMIN_AMQP_PASSWORD": "admin-pw-4",
    "RDB_REPLAY_AMQP_PASSWORD": "replay-pw-5",
}


def test_compose_renders_rabbitmq_password_hashes(tmp_path: Path) -> None:
    rendered = json.loads(_render_compose_definitions(tmp_path, COMPOSE_PASSWORDS).read_text())
    users = {u["name"]: u for u in rendered["users"]}
    for name, env in [("rdb-scheduler", "RDB_SCHEDULER_AMQP_PASSWORD"), ("rdb-worker", "RDB_WORKER_AMQP_PASSWORD"),
                      ("rdb-monitor", "RDB_MONITOR_AMQP_PASSWORD"), ("rdb-admin", "RDB_ADMIN_AMQP_PASSWORD"),
                      ("rdb-replay", "RDB_REPLAY_AMQP_PASSWORD")]:
        raw = base64.b64decode(users[name]["password_hash"])
        salt, digest = raw[:4], raw[4:]
        assert hashlib.sha256(salt + COMPOSE_PASSWORDS[env].encode()).digest() == digest
    assert users["rdb-admin"]["tags"] == ["administrator"]
    # Everything but users and the admin's permission is the file as it is.
    original = definitions()
    for key in ("queues", "exchanges", "bindings", "vhosts"):
        assert rendered[key] == original[key]


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    assert text.splitlines()[[i for i, ln in enumerate(text.splitlines()) if ln.startswith("FROM ")][0]] == (
        "FROM python:3.11-slim"
    )
    assert re.search(r"^RUN pip install \.", text, re.MULTILINE)
    assert f"EXPOSE {METRICS_PORT}" in text
    assert f"http://127.0.0.1:{METRICS_PORT}/healthz" in text
    for path in ("setup.cfg", "pyproject.toml", "README.md", "rdb_client", "rdb_worker", "schema"):
        assert (REPO / path).exists()
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", text, re.MULTILINE), f"{path} is not copied"


# --- Kubernetes ------------------------------------------------------------------------


def test_kubernetes_deployment() -> None:
    (deployment,) = k8s_docs("worker-deployment.yaml")
    assert deployment["kind"] == "Deployment" and deployment["apiVersion"] == "apps/v1"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 90
    c = k8s_worker_container()
    argv = list(c.get("command", [])) + list(c.get("args", []))
    assert argv == ["rdb-worker", "--queue", QUEUE, "--metrics-port", str(METRICS_PORT)]
    assert "lifecycle" not in c  # SIGTERM drains; no preStop
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": METRICS_PORT}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": METRICS_PORT}
    assert {p["containerPort"] for p in c["ports"]} == {METRICS_PORT}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)

    secrets = {d["metadata"]["name"]: d for d in k8s_docs("secret.example.yaml")}
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert set(env) == {"RDB_AMQP_URL", "RDB_DB_URL"}
    for ref in env.values():
        assert ref["key"] in secrets[ref["name"]]["stringData"]
    data = secrets["rdb-worker"]["stringData"]
    assert data["RDB_AMQP_URL"].startswith("amqp://rdb-worker:")
    assert data["RDB_DB_URL"].startswith("mysql+pymysql://")


def test_keda_scaled_object() -> None:
    docs = {d["kind"]: d for d in k8s_docs("keda-scaledobject.yaml")}
    scaled = docs["ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    (deployment,) = k8s_docs("worker-deployment.yaml")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # At least one worker always: the release cycle runs in the workers.
    assert 1 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"] <= 50
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == QUEUE
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert int(trigger["metadata"]["value"]) >= 1
    auth = docs["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (target,) = auth["spec"]["secretTargetRef"]
    assert target["parameter"] == "host"
    secrets = {d["metadata"]["name"]: d for d in k8s_docs("secret.example.yaml")}
    assert secrets[target["name"]]["stringData"][target["key"]].startswith("amqp://rdb-monitor:")


# --- commands and flags ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["systemd", "compose", "kubernetes", "dockerfile"])
def test_worker_command_flags_are_accepted_by_rdb_worker(where: str) -> None:
    argv = worker_commands()[where]
    assert Path(argv[0]).name == "rdb-worker"
    try:
        args = cli._parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"rdb-worker rejects the {where} command line {argv[1:]} (see the error above)")
    assert args.queue == QUEUE
    assert args.metrics_port == METRICS_PORT
    assert args.amqp_url is None and args.db_url is None, "secrets must not be on the command line"
    assert not any("://" in part for part in argv)


# --- on a real broker ------------------------------------------------------------------

SERVERS_AVAILABLE = Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()


@pytest.fixture
def rabbit() -> Iterator[Any]:
    if not SERVERS_AVAILABLE:
        pytest.skip("needs the Debian rabbitmq-server package")
    from rdb_worker.devservers import PrivateRabbitMQ

    base = REPO / ".rdb-servers" / f"deploy-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    node = PrivateRabbitMQ(base, name="deploy")
    try:
        node.start()
        yield node
    finally:
        node.destroy()
        shutil.rmtree(base, ignore_errors=True)


def _url(node: Any, user: str, password: str) -> str:
    return f"amqp://{user}:{password}@127.0.0.1:{node.port}/%2F"


def _refused(url: str, action: Any) -> pika.exceptions.ChannelClosedByBroker:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            action(channel)
        assert info.value.reply_code == 403, info.value  # ACCESS_REFUSED
        return info.value
    finally:
        if connection.is_open:
            connection.close()


def _passive(url: str, queue: str) -> tuple[int, int]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ok = connection.channel().queue_declare(queue, passive=True)
        return ok.method.message_count, ok.method.consumer_count
    finally:
        connection.close()


def test_definitions_on_a_real_broker(rabbit: Any, db_url: str, tmp_path: Path) -> None:
    from rdb_client import RDBClient
    from rdb_worker.worker import Worker

    rabbit.ctl("import_definitions", str(DEFINITIONS))
    listed = rabbit.ctl("list_queues", "name", "type", "--formatter", "json")
    types = {q["name"]: q["type"] for q in json.loads(listed)}
    assert types == {NAMES.queue: "quorum", NAMES.dead_letter_queue: "quorum", NAMES.record_stream: "stream"}

    # Placeholders are not passwords anyone knows; the operator sets real ones.
    passwords = {"rdb-scheduler": "s-" + uuid.uuid4().hex, "rdb-worker": "w-" + uuid.uuid4().hex,
                 "rdb-monitor": "m-" + uuid.uuid4().hex, "rdb-replay": "r-" + uuid.uuid4().hex}
    for user, password in passwords.items():
        rabbit.ctl("change_password", user, password)
    scheduler = _url(rabbit, "rdb-scheduler", passwords["rdb-scheduler"])
    worker_url = _url(rabbit, "rdb-worker", passwords["rdb-worker"])
    monitor = _url(rabbit, "rdb-monitor", passwords["rdb-monitor"])

    # The worker's own declare (every object, with its arguments) against the imported
    # topology: RabbitMQ answers PRECONDITION_FAILED to any difference, ACCESS_REFUSED to a
    # missing permission, and start() raises either.
    worker = Worker(worker_url, db_url, queue=QUEUE, release_interval_s=0)
    worker.start()
    try:
        with RDBClient(scheduler, timeout_s=20, queue=QUEUE) as client:
            assert client.get_hosts([424242]) == [None]
            assert client.release_hosts() == []
        # The client's timeout report: a passive declare of the request queue.
        assert _passive(scheduler, QUEUE)[1] == 1
        assert _passive(monitor, QUEUE)[1] == 1  # what KEDA does

        # The scheduler may not touch the worker's side.
        _refused(scheduler, lambda ch: ch.basic_consume(QUEUE, lambda *a: None))
        _refused(scheduler, lambda ch: ch.basic_get(NAMES.dead_letter_queue))
        _refused(scheduler, lambda ch: ch.queue_declare(QUEUE, durable=True,
                                                        arguments=transport.queue_arguments(NAMES, 5)))
        _refused(scheduler, lambda ch: ch.basic_publish("", QUEUE, b"x"))
        _refused(scheduler, lambda ch: ch.basic_consume(NAMES.record_stream, lambda *a: None))
        # rdb-replay reads the record stream (the batches above were recorded), and only that.
        from rdb_worker.replay import main as replay_main

        replay_url = _url(rabbit, "rdb-replay", passwords["rdb-replay"])
        assert replay_main(["show", "--amqp-url", replay_url, "--queue", QUEUE, "--json"]) == 0
        _refused(replay_url, lambda ch: ch.basic_consume(QUEUE, lambda *a: None))
        # The worker may not publish batches, the monitor may do nothing.
        _refused(worker_url, lambda ch: ch.basic_publish(NAMES.exchange, QUEUE, b"x"))
        _refused(monitor, lambda ch: ch.basic_get(QUEUE))
        _refused(monitor, lambda ch: ch.queue_declare("", exclusive=True))

        # A batch that fails and has nobody to answer is dead-lettered through the DLX.
        connection = pika.BlockingConnection(pika.URLParameters(scheduler))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(NAMES.exchange, QUEUE, b"\xc1 not msgpack", mandatory=True)
        finally:
            connection.close()
        deadline = time.monotonic() + 20
        while _passive(rabbit.amqp_url, NAMES.dead_letter_queue)[0] < 1:
            assert time.monotonic() < deadline, "the bad batch never reached the dead-letter queue"
            time.sleep(0.2)
    finally:
        worker.stop(timeout_s=10)
    assert worker.stopped

    # Without the definitions' objects, the worker user can create them all itself (a new
    # queue with a DLX needs read on it and write on the DLX; a redeclare doesn't).
    admin = pika.BlockingConnection(pika.URLParameters(rabbit.amqp_url))
    try:
        channel = admin.channel()
        for queue in (QUEUE, NAMES.dead_letter_queue, NAMES.record_stream):
            channel.queue_delete(queue)
        for exchange in (NAMES.exchange, NAMES.dead_letter_exchange):
            channel.exchange_delete(exchange)
    finally:
        admin.close()
    worker = Worker(worker_url, db_url, queue=QUEUE, release_interval_s=0)
    worker.start()
    worker.stop(timeout_s=10)
    assert _passive(scheduler, QUEUE) == (0, 0)

    # The compose route: definitions rendered with real hashes log in as they should.
    rendered = _render_compose_definitions(tmp_path, COMPOSE_PASSWORDS)
    rabbit.ctl("import_definitions", str(rendered))
    assert _passive(_url(rabbit, "rdb-worker", COMPOSE_PASSWORDS["RDB_WORKER_AMQP_PASSWORD"]), QUEUE)[1] == 0
    assert _passive(_url(rabbit, "rdb-admin", COMPOSE_PASSWORDS["RDB_ADMIN_AMQP_PASSWORD"]), QUEUE)[1] == 0
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        _passive(worker_url, QUEUE)  # the password set before is gone


# --- the worker's database grants (docs/operations.md) ---------------------------------


def _documented_worker_grants() -> list[str]:
    doc = (REPO / "docs" / "operations.md").read_text()
    block = doc.split("<!-- worker-grants:begin -->", 1)[1].split("<!-- worker-grants:end -->", 1)[0]
    sql = block.strip().removeprefix("```sql").removesuffix("```")
    statements = [s.strip() for s in sql.split(";") if s.strip()]
    assert statements[0].startswith("CREATE USER 'rdb_worker'@'%'")
    return statements


def test_worker_runs_with_the_documented_database_grants(
    amqp_url: str, db_url: str, engine: Any, queue_name: str
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from rdb_client import AcquireHostRequest, RDBClient, UpdateHostRequest
    from rdb_worker.worker import Worker
    from tests.labkit import Lab

    database = make_url(db_url).database
    user, password = f"rdbw_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    statements = [
        s.replace("'rdb_worker'@'%'", f"'{user}'@'%'").replace("autotest_web.", f"`{database}`.")
        .replace("IDENTIFIED BY '...'", f"IDENTIFIED BY '{password}'")
        for s in _documented_worker_grants()
    ]
    # Every table the worker's code touches is granted, and nothing on the other tables.
    granted = {s.split(" ON ", 1)[1].split(" TO ", 1)[0].split(".", 1)[1] for s in statements[1:]}
    assert "afe_jobs" not in granted and "afe_users" not in granted
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
            conn.commit()
    except DBAPIError as exc:
        pytest.skip(f"the test database user may not create users here: {exc.orig}")
    restricted_url = make_url(db_url).set(username=user, password=password).render_as_string(hide_password=False)
    try:
        lab = Lab(engine)
        host_id = lab.host("granted-1", labels=("board:eve",), acls=("pool",))
        lab.host("granted-2", labels=("board:eve",), acls=("pool",))
        worker = Worker(amqp_url, restricted_url, queue=queue_name, release_interval_s=0)
        worker.start()
        try:
            with RDBClient(amqp_url, timeout_s=20, queue=queue_name) as client:
                request = AcquireHostRequest(deps=frozenset({lab.labels["board:eve"]}),
                                             acls=frozenset({lab.acls["pool"]}))
                leased = client.acquire_hosts([request])
                assert leased[0] is not None and leased[0].id == host_id
                assert client.update_hosts([UpdateHostRequest(host_id, {"dirty": True})]) == [None]
                assert client.get_hosts([host_id])[0].dirty  # type: ignore[union-attr]
                assert client.release_hosts(grace_s=0) == [host_id]
            assert worker.housekeeper is not None
            assert worker.housekeeper.run_once() is not None  # release, prune replies, prune history
        finally:
            worker.stop(timeout_s=10)
        restricted = create_engine(restricted_url)
        try:
            with restricted.connect() as conn, pytest.raises(DBAPIError) as info:
                conn.execute(text("UPDATE afe_labels SET name = name"))
            assert "command denied" in str(info.value.orig).lower()
        finally:
            restricted.dispose()
    finally:
        with engine.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
            conn.commit()
