"""A 3-node RabbitMQ cluster on one machine, from Debian's rabbitmq-server, for tests.

Each node has its own node name (``reqrep-cl<N>@localhost``), AMQP port, distribution port
(AMQP port + 20000), config file and state, all under one temporary directory that the rabbitmq
user may read (the server drops to that user). The nodes share the machine's Erlang cookie and
epmd. Forming the cluster: start the three nodes, then on the second and third ``stop_app``,
``reset``, ``join_cluster`` the first, ``start_app``.

Partitions: the last node runs in a cgroup (v2) of its own, so that iptables can drop the
Erlang distribution traffic it sends (``partition``) without touching its AMQP clients or the
other two nodes; every rule is removed on exit. The nodes run with ``pause_minority``: a node
cut off from the majority pauses (closes its client connections and listeners) until it can
see the others again.

When a quorum queue got a leader is read from the nodes' logs (``elected``): the moment the
broker serves it again, which reqrep's recovery is measured from.

Needs root (to hand the state directory to the rabbitmq user) and ``rabbitmq-server`` on PATH;
partitions need iptables with the cgroup match and cgroup v2 at ``CGROUP_ROOT``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["Cluster", "ClusterUnavailable", "Node"]

HOST = "127.0.0.1"
CGROUP_ROOT = Path("/sys/fs/cgroup/unified")


class ClusterUnavailable(RuntimeError):
    """The cluster could not be formed on this machine."""


class Node:
    """One RabbitMQ node: start, kill -9, restart, rabbitmqctl."""

    def __init__(self, name: str, port: int, base: Path, *, cgroup: Path | None = None) -> None:
        self.name = name
        self.node = f"{name}@localhost"
        self.port = port
        self.dist_port = port + 20000
        self.dir = base / name
        self.url = f"amqp://guest:guest@{HOST}:{port}/%2F"
        self.cgroup = cgroup  # launched inside it, if given (for partitions)
        self._log: list[str] = []  # the lines of its log read so far
        self._log_read = 0  # bytes of its log read so far

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
        }

    def prepare(self) -> None:
        self.dir.mkdir(parents=True)
        # guest may log in from loopback only, which is where the tests are.
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = {HOST}:{self.port}\n"
            # Detect a dead peer fast: the tests kill nodes on purpose.
            "net_ticktime = 10\n"
            # A node that cannot see the majority pauses instead of serving a split brain.
            "cluster_partition_handling = pause_minority\n",
            encoding="utf-8",
        )
        (self.dir / "enabled_plugins").write_text("[].\n", encoding="utf-8")
        shutil.chown(self.dir, "rabbitmq", "rabbitmq")
        for item in self.dir.iterdir():
            shutil.chown(item, "rabbitmq", "rabbitmq")

    def launch(self) -> None:
        """Start the node in the background (``await_startup`` waits for it)."""
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "pid").unlink()
        command = ["rabbitmq-server", "-detached"]
        if self.cgroup is not None:  # the whole process tree, and every socket it makes
            procs = self.cgroup / "cgroup.procs"
            command = ["sh", "-c", f'echo $$ > "{procs}" && exec rabbitmq-server -detached']
        subprocess.run(command, env=self._env(), check=True, capture_output=True, timeout=60)

    def await_startup(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            # await_startup fails until the node has registered with epmd: retry it.
            result = self.ctl("await_startup", timeout=max(5.0, deadline - time.monotonic()))
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"{self.node} did not start: {result.stderr.strip()}")
            time.sleep(0.5)

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.node, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def check(self, *args: str) -> str:
        result = self.ctl(*args)
        if result.returncode != 0:
            raise ClusterUnavailable(f"{self.node}: rabbitmqctl {' '.join(args)}: {result.stderr}")
        return result.stdout

    def log_lines(self) -> list[str]:
        """The node's log, as far as it is written: only what was added since the last call is
        read (callers poll it)."""
        try:
            with (self.dir / "log" / f"{self.node}.log").open("rb") as log:
                if log.seek(0, 2) < self._log_read:  # started afresh: read it from the top
                    self._log_read = 0
                log.seek(self._log_read)
                added = log.read()
        except OSError:
            return self._log
        complete = added[: added.rfind(b"\n") + 1]  # a line still being written waits
        self._log_read += len(complete)
        self._log.extend(complete.decode("utf-8", errors="replace").splitlines())
        return self._log

    def pid(self) -> int | None:
        try:
            return int((self.dir / "pid").read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None

    def kill9(self) -> None:
        """SIGKILL the node's Erlang VM: its sockets close at once, nothing is flushed."""
        pid = self.pid()
        if pid is None:
            raise ClusterUnavailable(f"{self.node} has no pid file")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.ctl("stop", timeout=60)
        pid = self.pid()
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Cluster:
    """Three nodes joined into one cluster; ``close()`` stops them and removes their state."""

    def __init__(
        self, ports: Sequence[int] = (5761, 5762, 5763), prefix: str = "reqrep-cl"
    ) -> None:
        if os.geteuid() != 0:
            raise ClusterUnavailable("forming a cluster needs root (the nodes run as rabbitmq)")
        if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
            raise ClusterUnavailable("rabbitmq-server is not installed")
        self.base = Path(tempfile.mkdtemp(prefix="reqrep-cluster-"))
        self.base.chmod(0o755)
        self.cgroup = _cgroup(f"{prefix}-cut-{os.getpid()}")
        self.nodes = [Node(f"{prefix}{i + 1}", port, self.base) for i, port in enumerate(ports)]
        self.nodes[-1].cgroup = self.cgroup  # the one ``partition`` can cut off

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def form(self) -> None:
        for node in self.nodes:
            node.stop()  # a node left behind by an earlier, killed run
            node.prepare()
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.await_startup()
        first = self.nodes[0].node
        for node in self.nodes[1:]:
            node.check("stop_app")
            node.check("reset")
            node.check("join_cluster", first)
            node.check("start_app")
        for node in self.nodes:
            node.await_startup()
        running = json.loads(self.nodes[0].check("cluster_status", "--formatter", "json"))
        if len(running.get("running_nodes", [])) != len(self.nodes):
            raise ClusterUnavailable(f"cluster did not form: {running}")

    def node_on(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def leader_of(self, queue: str) -> Node:
        """The node that leads the quorum queue ``queue``."""
        for node in self.nodes:
            result = node.ctl("list_queues", "name", "leader", "--formatter", "json")
            if result.returncode != 0:
                continue
            for row in json.loads(result.stdout or "[]"):
                if row.get("name") == queue:
                    return next(n for n in self.nodes if n.node == row.get("leader"))
        raise ClusterUnavailable(f"no leader found for {queue}")

    def elected(self, queue: str, after: float) -> float | None:
        """When the quorum queue ``queue`` first got a leader after ``after`` (both
        ``time.time()``), from the nodes' logs; None if it has not (or it is not logged yet).

        Ra logs ``queue 'Q' in vhost '/': candidate -> leader in term: N`` on the node that wins
        an election: from that moment the queue takes consumers and messages again. The log's
        own timestamp is used, so a line written late (the log is buffered) still gives the
        moment itself.
        """
        marker = f"queue '{queue}' in vhost '/': candidate -> leader"
        moments = [
            stamp
            for node in self.nodes
            for line in node.log_lines()
            if marker in line and (stamp := _logged_at(line)) is not None and stamp > after
        ]
        return min(moments, default=None)

    def restart(self, node: Node) -> None:
        node.launch()
        node.await_startup()

    @contextlib.contextmanager
    def partition(self) -> Iterator[Node]:
        """Cut the last node off from the other two (their Erlang distribution traffic, both
        ways) for the ``with`` block; yields it. AMQP to every node keeps flowing."""
        node = self.nodes[-1]
        if self.cgroup is None:
            raise ClusterUnavailable("no cgroup v2 for partitions")
        match = ["OUTPUT", "-m", "cgroup", "--path", self.cgroup.name, "-p", "tcp"]
        rules = [[*match, "--dport", str(o.dist_port), "-j", "DROP"] for o in self.nodes[:-1]]
        rules.append([*match, "--sport", str(node.dist_port), "-j", "DROP"])
        added: list[list[str]] = []
        try:
            for rule in rules:
                subprocess.run(["iptables", "-A", *rule], check=True, capture_output=True)
                added.append(rule)
            yield node
        finally:
            for rule in added:
                subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        if self.cgroup is not None:  # empty once the last of its node's processes has exited
            deadline = time.monotonic() + 30
            while self.cgroup.exists() and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    self.cgroup.rmdir()
                    break
                time.sleep(0.1)


def _cgroup(name: str) -> Path | None:
    """A cgroup v2 for the node that ``partition`` cuts off, or None where there is none."""
    if not (CGROUP_ROOT / "cgroup.procs").exists() or shutil.which("iptables") is None:
        return None
    path = CGROUP_ROOT / name
    try:
        path.mkdir(exist_ok=True)
    except OSError:
        return None
    return path


def _logged_at(line: str) -> float | None:
    """The ``time.time()`` of a RabbitMQ log line (``2026-12-08 00:38:42.956240+00:00 [...``)."""
    stamp, _, _rest = line.partition(" [")
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
