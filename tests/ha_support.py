"""Real replicated infrastructure for the HA tests: Redis Sentinel, Redis Cluster, a remote HSM.

Everything runs as our own child processes on free loopback ports, with its data in a throwaway
directory, and is torn down completely (each component starts its processes in a new session, so
one ``killpg`` reaches every child they forked). Faults are real signals: SIGKILL for a crash,
SIGSTOP/SIGCONT for a node that hangs (a GC pause, a stuck disk, a network partition seen from
the client: the socket stays open and nothing answers).

Redis Sentinel (:class:`SentinelDeployment`)
    One master, two replicas (``--replicaof``), three sentinels (``redis-server <conf> --sentinel``:
    a sentinel rewrites its config file, so each one gets a file of its own). Timeouts are short so
    a failover completes in a few seconds: ``down-after-milliseconds 1000``,
    ``failover-timeout 3000``; the replicas use diskless sync without delay so a (re)joining
    replica is in sync within milliseconds. The service name is :data:`SERVICE`. The replicas
    reach the first master through a :class:`Link` each, so :meth:`SentinelDeployment.partition_replicas`
    can stop replication without closing a socket (the master keeps counting them as connected,
    as on a network that drops packets). ``client()`` builds redis-py's Sentinel client as an app
    should: short timeouts, no retries.

Redis Cluster (:class:`ClusterDeployment`)
    Three masters (optionally one replica each), ``cluster-enabled yes``, built with
    ``redis-cli --cluster create … --cluster-yes``, ready once every node says
    ``cluster_state:ok``. ``cluster-require-full-coverage no`` so that a dead master only takes its
    own slots down; ``cluster-node-timeout`` is short (1000 ms) so the others notice quickly. A
    killed node restarts on the same port with its ``nodes.conf`` and takes its slots back (empty:
    no persistence, which the epoch rule is there for). ``client()`` builds ``RedisCluster`` with
    every node as a startup node, short timeouts, no retries.

Remote HSM over p11-kit (:class:`P11KitServer`)
    Debian packages ``p11-kit`` (the ``p11-kit`` command and ``/usr/libexec/p11-kit/p11-kit-server``)
    and ``p11-kit-modules`` (the client module, :data:`P11KIT_CLIENT_MODULE`). The server::

        SOFTHSM2_CONF=<throwaway conf> p11-kit server --foreground --name <socket path> \\
            --provider /usr/lib/softhsm/libsofthsm2.so 'pkcs11:token=<label>'

    ``--name`` (``-n``) is the path of the Unix socket (default ``pkcs11-<pid>`` in p11-kit's
    runtime directory; paths are limited to 107 bytes, hence the short directory below). ``--provider`` (``-p``)
    names the PKCS#11 module that holds the token; the positional argument is a PKCS#11 URI
    selecting the exported token(s). ``--foreground`` (``-f``) keeps it attached (otherwise it
    daemonises). On start it prints ``P11_KIT_SERVER_ADDRESS=unix:path=<socket>; export …`` and
    ``P11_KIT_SERVER_PID=…``. The client side loads ``p11-kit-client.so`` as its PKCS#11 module
    and finds the server through the environment variable ``P11_KIT_SERVER_ADDRESS``
    (``unix:path=/path/to/socket``): set it before the module is loaded and initialised.

    Facts that matter for faults (p11-kit 0.24.1, Debian 12): the server forks one
    ``p11-kit-remote`` process per client connection, and that process holds the SoftHSM state
    of the connection. Killing only the listening server leaves existing connections working, so
    :meth:`P11KitServer.kill` kills the whole process group. ``p11-kit-client.so`` returns a new,
    separately initialised module instance (with its own connection) from every
    ``C_GetFunctionList`` call. A killed server fails calls with ``CKR_DEVICE_ERROR``; after a
    restart an instance works again only after ``C_Finalize`` + ``C_Initialize``. A stopped
    (SIGSTOP) server blocks calls until it resumes: the client has no timeout. Mechanisms whose
    parameters the 0.24 RPC cannot marshal are not listed (no ``CKM_SHA256_RSA_PKCS_PSS``,
    ``CKM_ECDH1_DERIVE``, ``CKM_EDDSA``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import support

SERVICE = "oauth-ha"
P11KIT_CLIENT_MODULE = next(
    (
        p
        for p in (
            "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
            "/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so",
            "/usr/lib/pkcs11/p11-kit-client.so",
            "/usr/lib64/pkcs11/p11-kit-client.so",
        )
        if os.path.exists(p)
    ),
    "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
)


def private_client_module() -> str:
    """A copy of p11-kit-client.so: loaded from another path, it is another module instance for
    python-pkcs11 (one per path) and the dynamic loader (another file), with its own connection."""
    base = Path(os.environ.get("OAUTH_HSM_TEST_BASE") or tempfile.mkdtemp())
    copy = base / "p11-kit-client-copy.so"
    if not copy.exists():
        shutil.copyfile(P11KIT_CLIENT_MODULE, copy)
    return str(copy)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - the component is still starting
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else "")
    )


class Process:
    """A child in a session of its own, so that a signal reaches everything it forked."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None):
        self.argv, self.log, self.env = argv, log, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True, stdin=subprocess.DEVNULL
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process and everything in its group; reap it."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)  # a stopped process must not keep its group alive
        self.signal(signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        finally:
            self.proc = None

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)


# --- a network link we can partition -------------------------------------------------------------------


class Link:
    """A TCP forwarder on a loopback port standing for the network between two real servers.

    :meth:`partition` stops forwarding in both directions without closing anything: the sender's
    writes succeed and sit in kernel buffers, exactly as on a network that silently drops packets
    (a SIGSTOPped receiver is not the same: its kernel still receives, and it catches up on
    SIGCONT). :meth:`cut` closes every connection and drops whatever was held.
    """

    def __init__(self, target_port: int):
        import threading

        self.target_port = target_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=1)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self.flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                if self.closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def partition(self) -> None:
        self.flowing.clear()

    def heal(self) -> None:
        self.flowing.set()

    def cut(self) -> None:
        """Close every connection through the link now (held data is dropped); new ones still work."""
        with self._lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            except OSError:
                pass
        self.flowing.set()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()


# --- Redis ---------------------------------------------------------------------------------------------


def _redis_server() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (./dev test installs it)")
    return exe


def _client(port: int, timeout: float = 0.5):
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True)


class NodeExited(RuntimeError):
    """A redis-server that exited before answering PING; ``log`` is what it wrote in that start."""

    def __init__(self, name: str, log: str):
        super().__init__(f"{name} exited at start:\n{log[-2000:]}")
        self.log = log


class RedisNode:
    """One redis-server (or sentinel) on a fixed loopback port; restartable on the same port."""

    def __init__(self, workdir: Path, name: str, extra: list[str], *, config: str | None = None, sentinel: bool = False):
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = support.free_port()
        self.extra = extra
        self.sentinel = sentinel
        self.config = config
        self._configured = False
        self.process: Process | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def client(self, timeout: float = 0.5):
        return _client(self.port, timeout)

    def start(self, extra: list[str] | None = None, wait: bool = True) -> None:
        argv = [_redis_server()]
        if self.config is not None:
            conf = self.dir / "node.conf"
            if not self._configured:  # a sentinel rewrites its file: keep what it learned across restarts
                conf.write_text(self.config.format(port=self.port, dir=self.dir))
                self._configured = True
            argv.append(str(conf))
        if self.sentinel:
            argv.append("--sentinel")
        else:
            argv += [
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--loglevel",
                "notice",
            ]
        argv += self.extra + (extra or [])
        log = self.dir / "log.txt"
        log_from = log.stat().st_size if log.exists() else 0  # the log is appended to across restarts
        self.process = Process(argv, log)
        self.process.start()
        if wait:
            self._wait_for_ping(log_from)

    def _wait_for_ping(self, log_from: int) -> None:
        """Until the node answers PING. A node that exits first raises :class:`NodeExited` at once,
        with what it logged since this start, rather than a timeout 10 s later."""
        wait_until(lambda: not self.running or self.client().ping(), 10, f"{self.name} on port {self.port} to answer PING")
        if not self.running:
            with open(self.process.log, "rb") as log:
                log.seek(log_from)
                raise NodeExited(self.name, log.read().decode(errors="replace"))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def pause(self) -> None:
        assert self.process is not None
        self.process.pause()

    def resume(self) -> None:
        assert self.process is not None
        self.process.resume()

    def info(self, section: str) -> dict:
        return self.client().info(section)


_REPLICATION = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1"]

_SENTINEL_CONF = """port {{port}}
bind 127.0.0.1
dir {{dir}}
protected-mode no
sentinel resolve-hostnames no
sentinel monitor {service} 127.0.0.1 {master_port} 2
sentinel down-after-milliseconds {service} {down_after}
sentinel failover-timeout {service} {failover_timeout}
sentinel parallel-syncs {service} 2
"""


class SentinelDeployment:
    """One master, two replicas, three sentinels monitoring :data:`SERVICE` (quorum 2)."""

    def __init__(
        self, workdir: Path, *, down_after_ms: int = 1000, failover_timeout_ms: int = 3000, master_extra: list[str] | None = None
    ):
        self.workdir = workdir
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master_extra = master_extra or []
        self.nodes = [RedisNode(workdir, f"redis-{i}", list(_REPLICATION)) for i in range(3)]
        self.sentinels: list[RedisNode] = []
        # The replicas reach the first master through a Link each, so a test can partition them.
        self.links: dict[str, Link] = {}

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> SentinelDeployment:
        master, *replicas = self.nodes
        conf = _SENTINEL_CONF.format(
            service=SERVICE, master_port=master.port, down_after=self.down_after_ms, failover_timeout=self.failover_timeout_ms
        )
        self.sentinels = [RedisNode(self.workdir, f"sentinel-{i}", [], config=conf, sentinel=True) for i in range(3)]
        try:
            master.start(self.master_extra)
            for replica in replicas:
                link = self.links[replica.name] = Link(master.port)
                replica.start(["--replicaof", "127.0.0.1", str(link.port)] + self.master_extra)
            for s in self.sentinels:
                s.start()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.sentinels + self.nodes:
            node.kill()
        for link in self.links.values():
            link.close()

    def wait_replicated(self, timeout: float = 10) -> None:
        """Until every replica has acknowledged everything the master has written so far."""
        master = self.master()

        def caught_up():
            info = master.info("replication")
            offset = info["master_repl_offset"]
            return info["connected_slaves"] == 2 and all(info[f"slave{i}"]["offset"] >= offset for i in range(2))

        wait_until(caught_up, timeout, "the replicas to catch up")

    def partition_replicas(self) -> None:
        """The first master can no longer reach its replicas (nor they it); nothing is closed."""
        self.route_through_links()
        for link in self.links.values():
            link.partition()

    def route_through_links(self, timeout: float = 15) -> None:
        """Make the replicas of the first master replicate through their links again. The sentinels
        "fix" a replica whose master address is not the master's own (``+fix-slave-config``, at
        their first INFO more than ``failover-timeout`` after the one that saw the address change;
        measured here: ~8 s after a fresh start, ~6 s after this call): an older deployment
        replicates directly, and a partition of the links would hold nothing back. After this,
        the links carry replication for at least ``failover-timeout`` again, so a test that
        partitions for longer than a fresh deployment's few seconds needs a deployment with a long
        ``failover-timeout`` (the quiet one in test_redis_ha uses 60 s)."""
        master = self.nodes[0]
        assert self.master() is master, "the links lead to the first master only"
        replicas = self.nodes[1:]
        for replica in replicas:
            if replica.info("replication").get("master_port") != self.links[replica.name].port:
                replica.client().execute_command("REPLICAOF", "127.0.0.1", self.links[replica.name].port)

        def through_links():
            for replica in replicas:
                info = replica.info("replication")
                if info.get("master_port") != self.links[replica.name].port or info.get("master_link_status") != "up":
                    return False
            return master.info("replication")["connected_slaves"] == len(replicas)

        wait_until(through_links, timeout, "the replicas to replicate through their links")

    def cut_replica_links(self) -> None:
        for link in self.links.values():
            link.cut()

    def wait_healthy(self, timeout: float = 20) -> None:
        """Every sentinel knows the master, both replicas and the two other sentinels, and the
        replicas are in sync."""

        def healthy():
            master = self.master()
            for s in self.sentinels:
                state = s.client().sentinel_master(SERVICE)
                if (state["ip"], state["port"]) != master.address or state["num-other-sentinels"] != 2:
                    return False
                if state["num-slaves"] < 2 or any(
                    "s_down" in r["flags"] or "disconnected" in r["flags"] for r in s.client().sentinel_slaves(SERVICE)
                ):
                    return False
            info = master.info("replication")
            return info["connected_slaves"] == 2 and all(info[f"slave{i}"]["state"] == "online" for i in range(2))

        wait_until(healthy, timeout, "the Sentinel deployment to be healthy", interval=0.1)

    def client(self, timeout: float = 0.25):
        """redis-py's Sentinel client for the service, as an app should build it: short timeouts,
        no retries (the endpoint answers 503; the OAuth client retries)."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        from redis.sentinel import Sentinel

        sentinel = Sentinel(
            self.sentinel_addresses,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        )
        return sentinel.master_for(
            SERVICE, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), health_check_interval=0
        )

    def url(self) -> str:
        """``OAUTH_HSM_REDIS_URL`` for this deployment: every sentinel, the service."""
        return "redis+sentinel://" + ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses) + f"/{SERVICE}"

    # -- who is who ---------------------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self.sentinels]

    def master_address(self) -> tuple[str, int]:
        """What the sentinels currently agree on (a majority of the running ones)."""
        votes: dict[tuple[str, int], int] = {}
        for s in self.sentinels:
            if not s.running:
                continue
            try:
                host, port = s.client().sentinel_get_master_addr_by_name(SERVICE)
            except Exception:  # noqa: BLE001 - a stopped sentinel
                continue
            votes[(host, int(port))] = votes.get((host, int(port)), 0) + 1
        best = max(votes.items(), key=lambda kv: kv[1], default=(None, 0))
        if best[1] < 2:
            raise RuntimeError(f"the sentinels do not agree on a master: {votes}")
        return best[0]

    def node_at(self, address: tuple[str, int]) -> RedisNode:
        return next(n for n in self.nodes if n.address == address)

    def master(self) -> RedisNode:
        return self.node_at(self.master_address())

    def replicas(self) -> list[RedisNode]:
        master = self.master()
        return [n for n in self.nodes if n is not master]

    # -- faults ---------------------------------------------------------------------------------

    def kill_master(self) -> RedisNode:
        master = self.master()
        master.kill()
        return master

    def wait_for_new_master(self, old: RedisNode, timeout: float = 20) -> RedisNode:
        """Until the sentinels name another node and that node accepts writes as a master."""

        def promoted():
            address = self.master_address()
            if address == old.address:
                return None
            node = self.node_at(address)
            return node if node.info("replication")["role"] == "master" else None

        return wait_until(promoted, timeout, "a new master", interval=0.05)

    def restart_as_replica(self, node: RedisNode) -> None:
        """Start a killed node again, replicating from the current master (as the sentinels would
        reconfigure it anyway)."""
        master = self.master()
        node.start(["--replicaof", "127.0.0.1", str(master.port)] + self.master_extra)
        wait_until(lambda: node.info("replication").get("master_link_status") == "up", 15, f"{node.name} to sync")


# --- Redis Cluster ---------------------------------------------------------------------------------


_CLUSTER = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
    "--cluster-require-full-coverage",
    "no",
    "--cluster-replica-validity-factor",
    "0",
] + _REPLICATION


def bus_port_slot(node: RedisNode) -> int:
    """Where a cluster node's bus port (the value of ``--cluster-port``) sits in ``node.extra``."""
    return node.extra.index("--cluster-port") + 1


def _start_on_free_ports(node: RedisNode, attempts: int = 3) -> None:
    """First start of a cluster node. Its port and bus port were free when picked, but another
    process can take one (an outgoing connection's ephemeral port) before redis-server binds it;
    it then aborts with "Address already in use" (seen once for a bus port in a clean-clone run).
    Pick both ports again and retry; any other exit is an error. Nothing refers to a cluster
    node's ports before ``redis-cli --cluster create``, so they can still change here."""
    for _ in range(attempts):
        try:
            node.start()
            return
        except NodeExited as exited:
            if "Address already in use" not in exited.log:
                raise
        node.port = support.free_port()
        node.extra[bus_port_slot(node)] = str(support.free_port())
    raise RuntimeError(f"{node.name}: its ports were taken {attempts} times in a row")


class ClusterDeployment:
    """Three masters (and ``replicas`` replicas per master), built with ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, *, replicas: int = 0, extra: list[str] | None = None):
        self.workdir = workdir
        self.replicas = replicas
        self.nodes = [RedisNode(workdir, f"cluster-{i}", _CLUSTER + (extra or [])) for i in range(3 * (1 + replicas))]
        for node in self.nodes:  # the bus defaults to port + 10000, which may not exist or be taken
            node.extra += ["--cluster-port", str(support.free_port())]

    def start(self) -> ClusterDeployment:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (./dev test installs redis-tools)")
        try:
            for node in self.nodes:
                _start_on_free_ports(node)
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *[f"127.0.0.1:{n.port}" for n in self.nodes],
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def wait_ok(self, timeout: float = 30) -> None:
        """Every running node says ``cluster_state:ok`` and sees every slot covered."""

        def ok():
            for node in self.nodes:
                if not node.running:
                    continue
                info = node.client().cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != 16384:
                    return False
            return True

        wait_until(ok, timeout, "cluster_state:ok on every node", interval=0.1)

    def client(self, timeout: float = 0.25):
        """redis-py's RedisCluster client: short timeouts, no retries."""
        from redis.backoff import NoBackoff
        from redis.cluster import ClusterNode, RedisCluster
        from redis.retry import Retry

        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in self.startup_nodes],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def url(self) -> str:
        """``OAUTH_HSM_REDIS_URL`` for this deployment: every node a startup node."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [n.address for n in self.nodes]

    def node_for_slot(self, slot: int) -> RedisNode:
        """The master that serves ``slot`` now (asked of a running node)."""
        for node in self.nodes:
            if not node.running:
                continue
            for start, end, master, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise RuntimeError(f"no running node knows slot {slot}")

    def node_for_key(self, key: str) -> RedisNode:
        import redis.crc

        return self.node_for_slot(redis.crc.key_slot(key.encode()))

    def kill(self, node: RedisNode) -> None:
        node.kill()

    def wait_for_failover(self, old: RedisNode, timeout: float = 20) -> None:
        """Until every running node routes the dead master's slots to one of its replicas."""

        def moved():
            for node in self.nodes:
                if node.running:
                    for _start, _end, master, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
                        if int(master[1]) == old.port:
                            return False
            return True

        wait_until(moved, timeout, f"the slots of {old.name} to move to a replica", interval=0.1)

    def restart(self, node: RedisNode) -> None:
        """Start a killed node on its port with its nodes.conf; it rejoins and serves its slots."""
        node.start()
        self.wait_ok()


# --- remote HSM ------------------------------------------------------------------------------------


class P11KitServer:
    """``p11-kit server`` exporting one SoftHSM2 token over a Unix socket (see the module docstring)."""

    def __init__(self, workdir: Path, softhsm_conf: str | Path, token_label: str, *, provider: str = support.SOFTHSM_MODULE):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.softhsm_conf = str(softhsm_conf)
        self.token_label = token_label
        self.provider = provider
        # Unix socket paths are limited to 107 bytes: pytest's tmp paths can be longer.
        self._sockdir = tempfile.mkdtemp(prefix="p11kit-", dir="/tmp")
        self.socket_path = os.path.join(self._sockdir, "hsm.sock")
        self.process: Process | None = None

    @property
    def address(self) -> str:
        """The value for ``P11_KIT_SERVER_ADDRESS``."""
        return f"unix:path={self.socket_path}"

    def start(self) -> None:
        exe = shutil.which("p11-kit")
        if exe is None or not os.path.exists(P11KIT_CLIENT_MODULE):
            raise RuntimeError("p11-kit is not installed (./dev test installs p11-kit and p11-kit-modules)")
        if os.path.exists(self.socket_path):  # left behind by a SIGKILLed server
            os.unlink(self.socket_path)
        env = {**os.environ, "SOFTHSM2_CONF": self.softhsm_conf}
        argv = [
            exe,
            "server",
            "--foreground",
            "--name",
            self.socket_path,
            "--provider",
            self.provider,
            f"pkcs11:token={self.token_label}",
        ]
        self.process = Process(argv, self.workdir / "p11-kit-server.log", env=env)
        self.process.start()
        wait_until(self._accepts, 10, "p11-kit server to listen")

    def _accepts(self) -> bool:
        if not self.process.running:
            raise RuntimeError(f"p11-kit server exited: {(self.workdir / 'p11-kit-server.log').read_text()[-500:]}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(self.socket_path)
            except OSError:
                return False
        return True

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def kill(self) -> None:
        """The HSM crashes: the server and every per-connection ``p11-kit-remote`` die at once."""
        if self.process is not None:
            self.process.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        """The HSM hangs: connections stay open, nothing answers."""
        assert self.process is not None
        self.process.pause()

    def resume(self) -> None:
        assert self.process is not None
        self.process.resume()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self._sockdir, ignore_errors=True)


# --- steady traffic against an app -----------------------------------------------------------------


class Outcome:
    """One request of :class:`Traffic`: when, how long, what came back, and what it sent."""

    __slots__ = ("started", "elapsed", "status", "retry_after", "body", "jti", "form")

    def __init__(self, started: float, elapsed: float, status: int, retry_after: str | None, body: str, jti: str, form: dict):
        self.started, self.elapsed, self.status = started, elapsed, status
        self.retry_after, self.body, self.jti, self.form = retry_after, body, jti, form

    @property
    def finished(self) -> float:
        return self.started + self.elapsed


class Traffic:
    """``threads`` threads posting fresh token requests to a Flask app (one test client each)
    until :meth:`stop`. ``make()`` returns ``(jti, form)`` of a new assertion."""

    def __init__(self, app, make, threads: int = 4, path: str = "/oauth2/token", pause: float = 0.0):
        import threading

        self.app, self.make, self.path, self.pause = app, make, path, pause
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def _run(self) -> None:
        client = self.app.test_client()
        while not self._stop.is_set():
            jti, form = self.make()
            started = time.monotonic()
            r = client.post(self.path, data=form)
            outcome = Outcome(
                started,
                time.monotonic() - started,
                r.status_code,
                r.headers.get("Retry-After"),
                r.get_data(as_text=True),
                jti,
                form,
            )
            with self._lock:
                self.outcomes.append(outcome)
            if self.pause:
                time.sleep(self.pause)

    def count(self, predicate) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if predicate(o))

    def wait_for(self, predicate, n: int, timeout: float, what: str) -> None:
        wait_until(lambda: self.count(predicate) >= n, timeout, what)

    def stop(self, timeout: float = 30) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "a request thread never came back"
        return list(self.outcomes)
