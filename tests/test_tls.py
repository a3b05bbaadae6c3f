"""TLS end to end: an amqps:// broker that demands a client certificate, and a MariaDB
whose `rdb` user is REQUIRE X509, served by an embedded worker and used by a client.

The module starts private servers of its own (under .rdb-servers/) with a throwaway CA,
a server certificate (SAN localhost and 127.0.0.1) and a client certificate made with
the openssl CLI. The broker keeps its plain listener (the devservers' readiness probe
uses it) and adds a TLS one on another port; everything TLS here uses that port.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from rdb_client import AcquireHostRequest, RDBClient
from rdb_client.exceptions import TransportError
from rdb_worker.devservers import RABBITMQ_SERVER_BIN, PrivateMariaDB, PrivateRabbitMQ, free_port
from rdb_worker.worker import Worker
from tests.labkit import Lab

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("openssl") is None or shutil.which("mariadbd") is None or not RABBITMQ_SERVER_BIN.exists(),
        reason="needs the openssl CLI and the Debian rabbitmq-server and mariadb-server packages",
    ),
]

# A refused TLS connection must fail fast: the client's connect retries (3 attempts,
# 0.5 + 1 + 1.5 s backoff) fit well within this, a hang would not.
REFUSAL_TIMEOUT_S = 8.0


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"openssl {' '.join(args)} failed:\n{result.stdout}{result.stderr}"


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate for `rdb`."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rdb throwaway test CA",
        "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=folder,
    )
    common = "basicConstraints=critical,CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    leaves = {
        "server": ("/CN=localhost", common + "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"),
        "client": ("/CN=rdb", common + "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"),
    }
    for serial, (name, (subject, extensions)) in enumerate(leaves.items(), start=2):
        (folder / f"{name}.ext").write_text(extensions)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-set_serial", str(serial), "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
                 cwd=folder)
    # A second CA that signed nothing here: trusting only it must fail verification.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rdb unrelated CA",
             "-keyout", "other-ca.key", "-out", "other-ca.pem", cwd=folder)
    for key in folder.glob("*.key"):
        key.chmod(0o600)  # the servers run as the current user, who owns them
    return {
        "ca": folder / "ca.pem",
        "other_ca": folder / "other-ca.pem",
        "server_cert": folder / "server.pem",
        "server_key": folder / "server.key",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client.key",
    }


def _with_query(url: str, **query: Path | str) -> str:
    return make_url(url).update_query_dict({k: str(v) for k, v in query.items()}).render_as_string(hide_password=False)


def amqps_url(rabbit: PrivateRabbitMQ, port: int, **tls: Path | str) -> str:
    query = urlencode({k: str(v) for k, v in tls.items()})
    return f"amqps://{rabbit.user}:{rabbit.password}@localhost:{port}/%2F" + (f"?{query}" if query else "")


@dataclass
class TLSLab:
    certs: dict[str, Path]
    rabbit: PrivateRabbitMQ
    maria: PrivateMariaDB
    tls_port: int
    plain_db_url: str
    tls_db_url: str
    engine: sa.Engine
    lab: Lab
    host_id: int

    def amqps(self, **tls: Path | str) -> str:
        return amqps_url(self.rabbit, self.tls_port, **tls)

    @property
    def good_amqps(self) -> str:
        return self.amqps(cafile=self.certs["ca"], certfile=self.certs["client_cert"], keyfile=self.certs["client_key"])

    def request(self) -> AcquireHostRequest:
        return AcquireHostRequest(deps={self.lab.label("board:eve")}, acls={self.lab.acl("acl")})


@pytest.fixture(scope="module")
def tls() -> Iterator[TLSLab]:
    """Private TLS servers for this module; the DB user `rdb` is REQUIRE X509; a migrated database with one host."""
    from schema import migrate

    base = REPO / ".rdb-servers" / f"tls-{uuid.uuid4().hex[:6]}"
    certs = make_certs(base / "certs")
    tls_port = free_port()
    rabbit = PrivateRabbitMQ(
        base,
        name="tls",
        extra_config={
            "listeners.ssl.default": f"127.0.0.1:{tls_port}",
            "ssl_options.cacertfile": str(certs["ca"]),
            "ssl_options.certfile": str(certs["server_cert"]),
            "ssl_options.keyfile": str(certs["server_key"]),
            "ssl_options.verify": "verify_peer",
            "ssl_options.fail_if_no_peer_cert": "true",
        },
    )
    maria = PrivateMariaDB(
        base,
        name="tls",
        extra_args=[
            f"--ssl-ca={certs['ca']}",
            f"--ssl-cert={certs['server_cert']}",
            f"--ssl-key={certs['server_key']}",
        ],
    )
    engines: list[sa.Engine] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(rabbit.start, 120.0), pool.submit(maria.start, 120.0)]:
                started.result()
        root = sa.create_engine(maria.root_url, isolation_level="AUTOCOMMIT")
        engines.append(root)
        with root.connect() as conn:
            assert conn.execute(sa.text("SELECT @@have_ssl")).scalar() == "YES", "mariadbd did not enable TLS"
            for host in ("%", "localhost"):
                conn.execute(sa.text(f"ALTER USER '{maria.user}'@'{host}' REQUIRE X509"))
        plain_db_url = maria.create_database("rdb_tls")
        tls_db_url = _with_query(
            plain_db_url, ssl_ca=certs["ca"], ssl_cert=certs["client_cert"], ssl_key=certs["client_key"]
        )
        migrate.upgrade(tls_db_url)  # over TLS: the rdb user can't come in otherwise
        engine = sa.create_engine(tls_db_url)
        engines.append(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
        lab = Lab(engine)
        host_id = lab.host("tls-host", ("board:eve",), ("acl",))
        yield TLSLab(certs, rabbit, maria, tls_port, plain_db_url, tls_db_url, engine, lab, host_id)
    finally:
        for engine in engines:
            engine.dispose()
        for server in (rabbit, maria):
            with contextlib.suppress(Exception):
                server.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def workers(tls: TLSLab) -> Iterator[list[Worker]]:
    """Workers a test appends here are stopped after it."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop(timeout_s=10)


def test_database_sessions_are_tls_and_plain_or_certless_logins_are_refused(tls: TLSLab) -> None:
    with tls.engine.connect() as conn:
        status = dict(conn.execute(sa.text("SHOW SESSION STATUS LIKE 'Ssl_%'")).all())
    assert status["Ssl_cipher"], f"the session is not encrypted: {status}"
    assert status["Ssl_version"].startswith("TLS"), status

    # The worker's own engine (make_engine adds connect_args) keeps the URL's ssl_* options.
    from rdb_worker.db import make_engine

    worker_engine = make_engine(tls.tls_db_url)
    try:
        with worker_engine.connect() as conn:
            assert conn.execute(sa.text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).one()[1]
    finally:
        worker_engine.dispose()

    refusals = {
        # PyMySQL >= 1.2 encrypts opportunistically (unverified) when the URL names no
        # ssl_* option, so a really plain connection has to disable TLS explicitly.
        "plain": (tls.plain_db_url, {"ssl_disabled": True}, 1045),
        "TLS without a client certificate": (_with_query(tls.plain_db_url, ssl_ca=tls.certs["ca"]), {}, 1045),
        "TLS trusting a CA that did not sign the server": (
            _with_query(tls.plain_db_url, ssl_ca=tls.certs["other_ca"], ssl_cert=tls.certs["client_cert"],
                        ssl_key=tls.certs["client_key"]), {}, 2003),
    }
    for what, (url, connect_args, errno) in refusals.items():
        engine = sa.create_engine(url, connect_args=connect_args)
        try:
            with pytest.raises(sa.exc.OperationalError) as refused:
                engine.connect().close()
        finally:
            engine.dispose()
        assert refused.value.orig.args[0] == errno, f"{what}: {refused.value}"  # type: ignore[union-attr]


def test_worker_and_client_over_amqps_with_client_certificates(tls: TLSLab, workers: list[Worker]) -> None:
    queue = f"rdb.test.tls.{uuid.uuid4().hex[:8]}"
    worker = Worker(tls.good_amqps, tls.tls_db_url, queue=queue, release_interval_s=0)
    workers.append(worker)
    worker.start()
    with RDBClient(tls.good_amqps, timeout_s=20, queue=queue) as client:
        [host] = client.acquire_hosts([tls.request()])
        assert host is not None and host.id == tls.host_id and host.hostname == "tls-host"
        [got] = client.get_hosts([tls.host_id])
        assert got is not None and got.hostname == "tls-host"
        # Broker side: every connection (worker and client) is on the TLS listener and
        # presented our client certificate.
        listed = tls.rabbit.ctl("list_connections", "--no-table-headers", "port", "ssl", "peer_cert_subject")
    rows = [line.split("\t") for line in listed.splitlines() if line.strip()]
    assert len(rows) >= 2, listed
    for port, ssl_on, subject in rows:
        assert (int(port), ssl_on, subject) == (tls.tls_port, "true", "CN=rdb"), listed
    assert tls.lab.leased_ids() == {tls.host_id}
    with RDBClient(tls.good_amqps, timeout_s=20, queue=queue) as client:
        client.release_hosts(grace_s=0)


@pytest.mark.parametrize("case", ["plain amqp to the TLS port", "amqps without a client certificate"])
def test_broker_refuses_plain_and_certless_connections(tls: TLSLab, case: str) -> None:
    url = {
        "plain amqp to the TLS port": f"amqp://{tls.rabbit.user}:{tls.rabbit.password}@127.0.0.1:{tls.tls_port}/%2F",
        "amqps without a client certificate": tls.amqps(cafile=tls.certs["ca"]),
    }[case]
    started_at = time.monotonic()
    with RDBClient(url, timeout_s=REFUSAL_TIMEOUT_S, queue="rdb.test.tls.nobody") as stranger:
        with pytest.raises(TransportError, match="cannot connect to the broker"):
            stranger.get_hosts([tls.host_id])
    took = time.monotonic() - started_at
    assert took < REFUSAL_TIMEOUT_S + 6, f"{case}: refused only after {took:.1f} s"


def test_client_reports_an_untrusted_broker_certificate_as_transport_error(tls: TLSLab) -> None:
    url = tls.amqps(cafile=tls.certs["other_ca"], certfile=tls.certs["client_cert"], keyfile=tls.certs["client_key"])
    with RDBClient(url, timeout_s=REFUSAL_TIMEOUT_S, queue="rdb.test.tls.nobody") as stranger:
        with pytest.raises(TransportError, match="cannot connect to the broker"):
            stranger.get_hosts([tls.host_id])


def test_worker_keeps_retrying_a_broker_with_an_untrusted_certificate(tls: TLSLab, workers: list[Worker]) -> None:
    url = tls.amqps(cafile=tls.certs["other_ca"], certfile=tls.certs["client_cert"], keyfile=tls.certs["client_key"])
    worker = Worker(url, tls.tls_db_url, queue="rdb.test.tls.untrusted", release_interval_s=0)
    workers.append(worker)
    with pytest.raises(TransportError, match="did not start within"):  # retrying, as for any unreachable broker
        worker.start(timeout_s=3)
    assert not worker.stopped
