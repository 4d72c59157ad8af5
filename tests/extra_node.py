"""A private RabbitMQ node for tests that must not touch the shared broker, and TLS material.

``ExtraNode`` runs ``scripts/rmq-node.sh``: a second node on its own ports, with a plain AMQP
listener and, when given certificates, a TLS one. Resource alarms (memory watermark) are set on
it only. ``make_tls_files`` makes a throw-away CA and certificates with the ``openssl`` command.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALARM = "0.0000001"  # a memory watermark every node is above: the alarm goes off at once
NORMAL = "0.4"
SCRIPT = ROOT / "scripts" / "rmq-node.sh"


def why_no_extra_node() -> str | None:
    """Why a private node cannot run here, or None if it can."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        return "rabbitmq-server is not installed"
    if os.geteuid() != 0:
        return "starting a private RabbitMQ node needs root"
    if shutil.which("openssl") is None:
        return "the openssl command is not installed"
    return None


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports() -> tuple[int, int]:
    """An AMQP port and the TLS port after it, both free, and the node's distribution port."""
    base = 31000 + uuid.uuid4().int % 9000
    for port in range(base, base + 400, 2):
        if _free(port) and _free(port + 1) and _free(port + 20000):
            return port, port + 1
    raise RuntimeError("no free ports for a private RabbitMQ node")


class ExtraNode:
    """A RabbitMQ node of our own: ``url`` (plain) and ``tls_url`` (if started with TLS)."""

    def __init__(self, tls: TlsFiles | None) -> None:
        self.name = f"reqrep-test-{uuid.uuid4().hex[:8]}"
        self.port, self.tls_port = free_ports()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.tls_url = f"amqps://guest:guest@localhost:{self.tls_port}/%2F"
        lines = []
        if tls is not None:
            lines = [
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {tls.ca}",
                f"ssl_options.certfile = {tls.server_cert}",
                f"ssl_options.keyfile = {tls.server_key}",
                # A client certificate is checked against the CA if one is sent; none is needed.
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        subprocess.run(
            ["bash", str(SCRIPT), "start", self.name, str(self.port), *lines],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def ctl(self, *args: str) -> str:
        return subprocess.run(
            ["bash", str(SCRIPT), "ctl", self.name, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", self.name], check=False, capture_output=True, timeout=120
        )


class TlsFiles:
    """A CA, a server certificate for localhost and a client certificate (its key encrypted with
    ``KEY_PASSWORD``) signed by it, and a second, unrelated CA."""

    KEY_PASSWORD = "client-key-pw-4711"  # noqa: S105 - a throw-away test key's password

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)  # the broker runs as the rabbitmq user and must read them
        self.dir = directory
        self.ca, ca_key = self._ca("reqrep-test-ca")
        self.other_ca, _ = self._ca("reqrep-other-ca")
        self.server_key = directory / "server.key"
        self.server_cert = directory / "server.pem"
        csr = directory / "server.csr"
        ext = directory / "server.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
            "authorityKeyIdentifier=keyid\n"
            "subjectKeyIdentifier=hash\n"
        )
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", self.server_key,
                 "-out", csr, "-subj", "/CN=localhost")  # fmt: skip
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key,
                 "-CAcreateserial", "-out", self.server_cert, "-days", "2",
                 "-extfile", ext)  # fmt: skip
        self.client_key = directory / "client.key"
        self.client_cert = directory / "client.pem"
        client_csr, client_ext = directory / "client.csr", directory / "client.ext"
        client_ext.write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=clientAuth\n"
            "authorityKeyIdentifier=keyid\n"
        )
        _openssl("req", "-newkey", "rsa:2048", "-keyout", self.client_key,
                 "-passout", f"pass:{self.KEY_PASSWORD}", "-out", client_csr,
                 "-subj", "/CN=reqrep-test-client")  # fmt: skip
        _openssl("x509", "-req", "-in", client_csr, "-CA", self.ca, "-CAkey", ca_key,
                 "-CAcreateserial", "-out", self.client_cert, "-days", "2",
                 "-extfile", client_ext)  # fmt: skip
        for path in directory.iterdir():
            path.chmod(0o644)

    def _ca(self, name: str) -> tuple[Path, Path]:
        key, cert = self.dir / f"{name}.key", self.dir / f"{name}.pem"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                 "-days", "2", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        return cert, key


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


class Alarm:
    """The node's memory alarm: on makes the broker block every connection that publishes."""

    def __init__(self, node: ExtraNode) -> None:
        self._node = node

    def on(self) -> None:
        self._node.ctl("set_vm_memory_high_watermark", ALARM)

    def off(self) -> None:
        self._node.ctl("set_vm_memory_high_watermark", NORMAL)
