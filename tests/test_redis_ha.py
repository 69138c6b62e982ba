"""Replicated Redis for real: Sentinel failover, Cluster slots, replica acknowledgement, eviction.

Every deployment is our own (tests/ha_support.py): real redis-server processes and sentinels on
loopback ports, faults injected with signals and a partitionable TCP link. The app reaches them
through ``OAUTH_HSM_REDIS_URL`` (``redis+sentinel://``, ``redis+cluster://``) unless a test is
about an injected client.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
import redis
from flask import Flask

import ha_support
from as_helpers import assertion_form, claims_for
from conftest import as_settings

pytestmark = pytest.mark.timeout(90)

# The replay script as the store runs it (flask_oauth_hsm/store/single_use.py), for the tests that
# show what Redis itself does with an acknowledged write.
USE_ONCE = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then epoch = ARGV[1]; redis.call('SET', KEYS[1], epoch) end
local fresh = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2])
if fresh then return {1, tonumber(epoch)} end
return {0, tonumber(epoch)}
"""


def _use_once(store, ident: str) -> None:
    now = time.time()
    store.use_once("jti", ident, expires_at=now + 60, issued_at=now, window=0)


def _assertion(as_env) -> tuple[str, dict]:
    claims = claims_for("c-es256", as_env.issuer)
    return claims["jti"], assertion_form(as_env.keys["c-es256"].jws(claims))


def _replay_record(store, jti: str):
    """Where the store records a client assertion's jti (client_auth/private_key_jwt.py)."""
    return store.layout.place("jti", "c-es256\0" + jti)


def _form(as_env) -> dict:
    return _assertion(as_env)[1]


def _app(as_env, redis_client=None, **overrides) -> Flask:
    """The AS on the main test token, on ``OAUTH_HSM_REDIS_URL`` from ``overrides`` or an injected client."""
    from flask_oauth_hsm import OAuthHSM

    settings = as_settings(
        overrides.pop("OAUTH_HSM_REDIS_URL", "redis://unused"),
        as_env.settings["OAUTH_HSM_REGISTRY"],
        OAUTH_HSM_RETRY_AFTER="3",
        **overrides,
    )
    if redis_client is not None:
        del settings["OAUTH_HSM_REDIS_URL"]
    app = Flask("ha-test")
    app.config.update(settings)
    OAuthHSM().init_app(app, redis_client=redis_client)
    return app


def _store(app):
    return app.extensions["oauth_hsm"].store


def _assert_unavailable(status: int, retry_after: str | None, body: str) -> None:
    assert status == 503, (status, body)
    assert retry_after == "3" and "access_token" not in body
    assert json.loads(body)["error"] == "temporarily_unavailable"


def _assert_rate_limited_after_three(app) -> None:
    client = app.test_client()
    statuses = [client.post("/oauth2/token", data={"grant_type": "client_credentials"}).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def _post_until_ok(client, as_env, timeout: float) -> list[int]:
    """Fresh assertions until one gets a token; every answer on the way must be a correct 503."""
    statuses = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.post("/oauth2/token", data=_form(as_env))
        statuses.append(r.status_code)
        if r.status_code == 200:
            return statuses
        _assert_unavailable(r.status_code, r.headers.get("Retry-After"), r.get_data(as_text=True))
        time.sleep(0.05)
    raise AssertionError(f"no token within {timeout} s: {statuses[-10:]}")


@pytest.fixture()
def sentinel(tmp_path):
    dep = ha_support.SentinelDeployment(tmp_path / "sentinel").start()
    yield dep
    dep.stop()


@pytest.fixture(scope="module")
def quiet_sentinel(tmp_path_factory):
    """A deployment no test kills: faults here are healed before the test ends. down-after 5 s: on a
    busy machine a master that misses pings for 1 s could be failed over (and the links lead to the
    first master only). failover-timeout 60 s: the sentinels re-point a replica that replicates
    through its link at the master directly once failover-timeout has passed (see
    ``route_through_links``); with the default 3 s that could happen during a partition on a busy
    machine, and the "partitioned" replica would acknowledge (it did once in CI)."""
    dep = ha_support.SentinelDeployment(
        tmp_path_factory.mktemp("quiet-sentinel"), down_after_ms=5000, failover_timeout_ms=60_000
    ).start()
    yield dep
    dep.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three masters, no replicas (so OAUTH_HSM_REDIS_WAIT_REPLICAS=0); no test kills a node of it."""
    dep = ha_support.ClusterDeployment(tmp_path_factory.mktemp("cluster")).start()
    yield dep
    dep.stop()


# --- OAUTH_HSM_REDIS_URL forms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, kind, hosts, service, db",
    [
        ("redis+sentinel://s1:26379,s2:26380,s3/oauth", "sentinel", [("s1", 26379), ("s2", 26380), ("s3", 26379)], "oauth", 0),
        ("rediss+sentinel://u:p@[::1]:5000/oauth/2?sentinel_password=x", "sentinel", [("::1", 5000)], "oauth", 2),
        ("redis+cluster://n1:7000,n2:7001", "cluster", [("n1", 7000), ("n2", 7001)], None, 0),
        ("redis://localhost:6379/0", "single", [], None, 0),
    ],
)
def test_redis_url_forms(url, kind, hosts, service, db):
    from flask_oauth_hsm.store.urls import parse_redis_url

    target = parse_redis_url(url)
    assert (target.kind, list(target.hosts), target.service, target.db) == (kind, hosts, service, db)
    assert "password" not in repr(target) and "url" not in repr(target)  # a repr never shows a secret


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://h:1/", "must be a redis://, rediss://, unix://, redis+sentinel://"),
        ("redis+sentinel://u:s3cret@h:1", "needs the service name as its path"),
        ("redis+sentinel://u:s3cret@h:1/svc/x", "the database after the service name must be a number"),
        ("redis+sentinel://u:s3cret@h:99999/svc", "every port must be a number from 1 to 65535"),
        ("redis+sentinel://u:s3cret@h:1,/svc", "every host needs a name or address"),
        ("redis+sentinel://u:s3cret@h:1/svc?password=s3cret", "unknown query parameter 'password'"),
        ("redis+cluster://u:s3cret@h:1/0", "has no path"),
        ("redis+cluster://u:s3cret@h:1?x=1", "takes no query parameters"),
    ],
)
def test_bad_redis_urls_are_refused_in_one_line_without_the_password(as_env, url, message):
    from flask_oauth_hsm.errors import ConfigError
    from flask_oauth_hsm.settings import load_settings

    settings = as_settings(url, as_env.settings["OAUTH_HSM_REGISTRY"])
    with pytest.raises(ConfigError) as info:
        load_settings(settings, {})
    text = str(info.value)
    assert text.startswith("OAUTH_HSM_REDIS_URL: ") and message in text and "\n" not in text and "s3cret" not in text


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"OAUTH_HSM_REDIS_WAIT_TIMEOUT": "0.2"},
            "OAUTH_HSM_REDIS_WAIT_TIMEOUT: must be at most half of OAUTH_HSM_REDIS_TIMEOUT",
        ),
        ({"OAUTH_HSM_REDIS_WAIT_REPLICAS": "-1"}, "OAUTH_HSM_REDIS_WAIT_REPLICAS: "),
        ({"OAUTH_HSM_REDIS_PREFIX": "a{b"}, "OAUTH_HSM_REDIS_PREFIX: braces must form one hash tag"),
    ],
)
def test_ha_settings_are_validated(as_env, overrides, message):
    from flask_oauth_hsm.errors import ConfigError
    from flask_oauth_hsm.settings import load_settings

    with pytest.raises(ConfigError, match="^" + message.replace("{", r"\{")):
        load_settings(as_settings("redis://localhost", as_env.settings["OAUTH_HSM_REGISTRY"], **overrides), {})


def test_redacted_urls_hide_every_password():
    from flask_oauth_hsm.store import redacted

    shown = redacted("redis+sentinel://user:s3cret@h1:1,h2:2/svc?sentinel_password=t0p")
    assert "s3cret" not in shown and "t0p" not in shown and shown.startswith("redis+sentinel://user:***@h1:1,h2:2/svc")


# --- Sentinel --------------------------------------------------------------------------------------------


def test_master_killed_gives_503_then_tokens_on_the_new_master_without_restart(as_env, sentinel):
    app = _app(as_env, sentinel.client())  # an injected client: the same object throughout
    client = app.test_client()
    used = _form(as_env)
    assert client.post("/oauth2/token", data=used).status_code == 200
    old = sentinel.kill_master()
    during = client.post("/oauth2/token", data=_form(as_env))
    assert during.status_code == 503 and "access_token" not in during.get_data(as_text=True)
    assert client.get("/oauth2/ready").status_code == 503
    statuses = _post_until_ok(client, as_env, timeout=20)  # the same app and the same client object
    assert sentinel.master() is not old and statuses[-1] == 200
    replay = client.post("/oauth2/token", data=used)
    assert replay.status_code == 401 and replay.get_json()["error"] == "invalid_client"
    assert client.get("/oauth2/ready").status_code == 200


def test_failover_under_steady_traffic(as_env, sentinel):
    """Four threads post fresh assertions while the master is killed: every answer is a token or
    a correct 503, every token's jti is on the new master, and no accepted assertion (before,
    during or after the failover) is accepted again."""
    app = _app(as_env, OAUTH_HSM_REDIS_URL=sentinel.url())
    store = _store(app)
    assert store.kind == "sentinel" and store.wait_replicas == 1
    traffic = ha_support.Traffic(app, lambda: _assertion(as_env)).start()
    try:
        traffic.wait_for(lambda o: o.status == 200, 20, 30, "tokens before the failover")
        old = sentinel.kill_master()
        killed = time.monotonic()
        sentinel.wait_for_new_master(old)
        promoted = time.monotonic()
        traffic.wait_for(lambda o: o.status == 200 and o.started > promoted, 20, 30, "tokens after the failover")
    finally:
        outcomes = traffic.stop()
    for o in outcomes:
        if o.status != 200:
            _assert_unavailable(o.status, o.retry_after, o.body)
    assert any(o.status == 503 for o in outcomes if o.started > killed)
    accepted = [o for o in outcomes if o.status == 200]
    new_master = sentinel.master().client()
    missing = [o.jti for o in accepted if not new_master.exists(_replay_record(store, o.jti).key)]
    assert missing == []
    before = [o for o in accepted if o.finished < killed]
    around = [o for o in accepted if o.finished >= killed and o.started <= promoted]  # answered by the dying master
    after = [o for o in accepted if o.started > promoted]
    client = app.test_client()
    for o in before[-20:] + around + after[:20]:
        replay = client.post("/oauth2/token", data=o.form)
        assert replay.status_code == 401 and replay.get_json()["error"] == "invalid_client", o.jti


def test_acknowledged_write_survives_failover_only_if_wait_saw_a_replica(sentinel):
    """Redis's own guarantee, which the store uses: a write is on the promoted replica if
    ``WAIT 1`` counted a replica, and may be lost if nothing waited (here the replicas' links are
    partitioned: the master still counts them as connected, the data never arrives)."""
    master = sentinel.master().client()
    sha = master.script_load(USE_ONCE)

    def use_once_and_wait(ident: str, wait_ms: int) -> tuple[int, int]:
        pipe = master.pipeline(transaction=False)  # one round trip: the script, then WAIT
        pipe.evalsha(sha, 2, "p:epoch", "p:jti:" + ident, int(time.time() * 1000), 60)
        pipe.execute_command("WAIT", 1, wait_ms)  # returns as soon as one replica has it
        (fresh, _epoch), acked = pipe.execute()
        return fresh, acked

    fresh, acked = use_once_and_wait("before", 5000)
    assert fresh == 1 and acked >= 1
    sentinel.partition_replicas()
    assert use_once_and_wait("during", 100) == (1, 0)  # accepted by the master, seen by no replica
    old = sentinel.kill_master()
    sentinel.cut_replica_links()
    new = sentinel.wait_for_new_master(old).client()
    assert new.exists("p:jti:before") == 1
    assert new.exists("p:jti:during") == 0  # a replay window, had the store answered "fresh"
    assert new.exists("p:epoch") == 1  # and the epoch rule cannot see it: the epoch key survived


def test_store_fails_closed_when_no_replica_acknowledges(quiet_sentinel):
    """What closes the window above: the replay record, a revocation and a consumed record each
    wait for one replica in the same round trip; none acknowledging is StoreUnavailable."""
    from flask_oauth_hsm.errors import StoreUnavailable
    from flask_oauth_hsm.store import ResetRule, Store

    store = Store(quiet_sentinel.client(), "wait-test:", ResetRule(5))
    store.ensure_epoch()
    store.put("code", "c1", b"record", 60)
    assert quiet_sentinel.master() is quiet_sentinel.nodes[0], "the replicas must replicate through the links"
    quiet_sentinel.partition_replicas()
    try:
        with pytest.raises(StoreUnavailable, match="replicas did not acknowledge"):
            _use_once(store, "unreplicated")
        with pytest.raises(StoreUnavailable, match="replicas did not acknowledge"):
            store.revoke("token-1", time.time() + 60)
        with pytest.raises(StoreUnavailable, match="replicas did not acknowledge"):
            store.take("code", "c1")
    finally:
        quiet_sentinel.cut_replica_links()  # heal: the replicas reconnect and resync
        quiet_sentinel.wait_healthy()
    _use_once(store, "replicated")


def test_resumed_old_master_cannot_accept_a_jti_the_new_master_lacks(sentinel):
    """The old master, SIGSTOPped past down-after, comes back still a master for ~10 s (until the
    sentinels demote it); an idle pooled connection of the app still points at it. It has no
    replica left to acknowledge, so the store refuses instead of answering "fresh"."""
    from flask_oauth_hsm.errors import StoreUnavailable
    from flask_oauth_hsm.store import ResetRule, Store

    store = Store(sentinel.client(), "zombie:", ResetRule(5))
    store.ensure_epoch()  # leaves an idle connection to the current master in the pool
    old = sentinel.master()
    old.pause()
    try:
        sentinel.wait_for_new_master(old)
    finally:
        old.resume()
    assert old.info("replication")["role"] == "master"  # not demoted yet
    with pytest.raises(StoreUnavailable):
        _use_once(store, "zombie-jti")  # lands on the old master, which no replica follows any more


def test_rate_limits_count_on_a_sentinel_master(as_env, quiet_sentinel):
    app = _app(
        as_env,
        OAUTH_HSM_REDIS_URL=quiet_sentinel.url(),
        OAUTH_HSM_RATE_LIMITS="address=3/minute",
        OAUTH_HSM_REDIS_PREFIX="rl-sentinel:",
    )
    _assert_rate_limited_after_three(app)


def test_sentinel_master_reports_its_policy(quiet_sentinel):
    assert quiet_sentinel.client().info("memory")["maxmemory_policy"] == "noeviction"


# --- Cluster -----------------------------------------------------------------------------------------------


def test_store_on_a_cluster_with_a_hash_tagged_prefix(cluster):
    """A prefix with its own hash tag keeps every record of the AS in one slot (one shard)."""
    from flask_oauth_hsm.store import Replayed, ResetRule, Store

    store = Store(cluster.client(), "{ha-test}:", ResetRule(5), wait_replicas=0)
    assert store.layout.buckets == 1
    store.ensure_epoch()
    _use_once(store, "a")
    with pytest.raises(Replayed):
        _use_once(store, "a")
    store.revoke("token-1", time.time() + 60)
    assert store.revocation("token-1").revoked and not store.revocation("token-2").revoked
    store.probe()


def test_untagged_prefix_on_a_cluster_spreads_buckets_with_each_epoch_beside_its_ids(cluster):
    """The layout is the store's: every record — replay ids, revocations, records we mint — lands
    in a bucket whose epoch shares its slot, and the buckets spread over every master."""
    import redis.crc

    from flask_oauth_hsm.store import Replayed, ResetRule, Store, connect

    store = Store(connect(cluster.url(), 0.25), "spread:", ResetRule(5), wait_replicas=0)
    assert store.kind == "cluster" and store.layout.buckets == 64
    store.ensure_epoch()
    for namespace in ("jti", "revoked", "code", "refresh", "dpop"):
        for i in range(40):
            at = store.layout.place(namespace, f"id-{i}")
            assert redis.crc.key_slot(at.key.encode()) == redis.crc.key_slot(at.epoch.encode())
            assert store.key(namespace, f"id-{i}") == at.key
    masters = {cluster.node_for_key(epoch).name for epoch in store.layout.epochs()}
    assert len(masters) == 3
    for i in range(40):
        _use_once(store, f"jti-{i}")
        with pytest.raises(Replayed):
            _use_once(store, f"jti-{i}")
    store.revoke("token-1", time.time() + 60)
    assert store.revocation("token-1").revoked and not store.revocation("token-2").revoked
    store.put("code", "c-1", b"value", 60)
    assert store.take("code", "c-1") == b"value" and store.take("code", "c-1") is None
    store.probe()


def test_rate_limits_count_on_a_cluster(as_env, cluster):
    app = _app(
        as_env,
        OAUTH_HSM_REDIS_URL=cluster.url(),
        OAUTH_HSM_REDIS_WAIT_REPLICAS="0",
        OAUTH_HSM_RATE_LIMITS="address=3/minute",
        OAUTH_HSM_REDIS_PREFIX="rl-cluster:",
    )
    _assert_rate_limited_after_three(app)


def test_cluster_node_killed_gives_503_for_its_buckets_then_recovers(as_env, tmp_path):
    """Three masters without replicas: while one is down, exactly the requests whose jti falls in
    one of its buckets get 503; the others get tokens. Restarted (empty), every bucket serves."""
    dep = ha_support.ClusterDeployment(tmp_path / "cluster").start()
    try:
        app = _app(as_env, OAUTH_HSM_REDIS_URL=dep.url(), OAUTH_HSM_REDIS_WAIT_REPLICAS="0")
        store, client = _store(app), app.test_client()
        assert client.post("/oauth2/token", data=_form(as_env)).status_code == 200
        victim = dep.node_for_key(store.layout.epoch(0))
        dep.kill(victim)
        seen: dict[bool, list[int]] = {True: [], False: []}
        while len(seen[True]) < 5 or len(seen[False]) < 5:
            jti, form = _assertion(as_env)
            on_victim = dep.node_for_key(_replay_record(store, jti).epoch) is victim
            r = client.post("/oauth2/token", data=form)
            if r.status_code != 200:
                _assert_unavailable(r.status_code, r.headers.get("Retry-After"), r.get_data(as_text=True))
            seen[on_victim].append(r.status_code)
        assert set(seen[True]) == {503}  # its slots: no token without its replay record
        assert 200 in seen[False]  # the other masters' slots keep serving
        ready = client.get("/oauth2/ready")
        assert ready.status_code == 503 and ready.get_json()["redis"] == "unavailable"
        dep.restart(victim)  # empty (no persistence): new epochs for its buckets
        ha_support.wait_until(lambda: client.get("/oauth2/ready").status_code == 200, 20, "readiness after the restart")
        for _ in range(5):
            jti, form = _assertion(as_env)
            while dep.node_for_key(_replay_record(store, jti).epoch) is not victim:
                jti, form = _assertion(as_env)
            assert client.post("/oauth2/token", data=form).status_code == 200
    finally:
        dep.stop()


def test_cluster_failover_keeps_every_acknowledged_id(tmp_path):
    """Three masters with a replica each and the default WAIT 1 (on the connection of the node
    that owns the slot): after a master dies and its replica takes over, every id accepted before
    is still refused; new ids in its buckets wait for a replica again (the old master, restarted)."""
    from flask_oauth_hsm.errors import StoreUnavailable
    from flask_oauth_hsm.store import Replayed, ResetRule, Store, connect

    dep = ha_support.ClusterDeployment(tmp_path / "cluster", replicas=1).start()
    try:
        store = Store(connect(dep.url(), 0.25), "failover:", ResetRule(5))
        assert store.wait_replicas == 1
        store.ensure_epoch()
        ids = [f"id-{i}" for i in range(60)]
        for ident in ids:
            _use_once(store, ident)
        victim = dep.node_for_key(store.layout.epoch(0))
        dep.kill(victim)
        dep.wait_for_failover(victim)
        for ident in ids:
            while True:
                try:
                    with pytest.raises(Replayed):
                        _use_once(store, ident)
                    break
                except StoreUnavailable:  # the client has not learnt the new topology yet
                    time.sleep(0.05)
        bucket_zero = (f"new-{i}" for i in range(100_000) if store.layout.place("jti", f"new-{i}").epoch == store.layout.epoch(0))
        with pytest.raises(StoreUnavailable, match="replicas did not acknowledge"):
            _use_once(store, next(bucket_zero))  # the promoted replica has no replica of its own
        dep.restart(victim)  # rejoins as the new master's replica
        ha_support.wait_until(lambda: _accepted(store, next(bucket_zero)), 20, "a replica for the promoted master")
    finally:
        dep.stop()


def _accepted(store, ident: str) -> bool:
    from flask_oauth_hsm.errors import StoreUnavailable

    try:
        _use_once(store, ident)
    except StoreUnavailable:
        return False
    return True


# --- eviction -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, policy",
    [
        ([], "noeviction"),
        (["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"], "allkeys-lru"),
        (["--rename-command", "CONFIG", '""', "--maxmemory-policy", "volatile-ttl"], "volatile-ttl"),
    ],
)
def test_info_memory_tells_the_eviction_policy_even_without_config(tmp_path, extra, policy):
    """How the store can check the policy where managed services rename or forbid CONFIG."""
    node = ha_support.RedisNode(tmp_path, "evict", extra)
    node.start()
    try:
        assert node.client().info("memory")["maxmemory_policy"] == policy
        if "CONFIG" in extra:
            with pytest.raises(redis.ResponseError):
                node.client().config_get("maxmemory-policy")
    finally:
        node.kill()


def test_an_evicting_redis_is_refused_at_start_up(as_env, tmp_path, caplog):
    from flask_oauth_hsm.errors import ConfigError

    node = ha_support.RedisNode(
        tmp_path, "evicting", ["--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru", "--requirepass", "s3cret"]
    )
    node.start(wait=False)
    url = f"redis://:s3cret@127.0.0.1:{node.port}/0"
    try:
        ha_support.wait_until(lambda: redis.Redis.from_url(url).ping(), 10, "the Redis with a password")
        with pytest.raises(ConfigError) as info:
            _app(as_env, OAUTH_HSM_REDIS_URL=url)
        text = str(info.value)
        assert text.startswith("OAUTH_HSM_REDIS_URL: Redis may evict replay records (maxmemory-policy volatile-lru")
        assert "s3cret" not in text and "\n" not in text and "OAUTH_HSM_REDIS_ALLOW_EVICTION" in text
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="flask_oauth_hsm"):
            app = _app(as_env, OAUTH_HSM_REDIS_URL=url, OAUTH_HSM_REDIS_ALLOW_EVICTION="true")
        assert any("may evict replay records" in r.getMessage() for r in caplog.records)
        assert app.test_client().get("/oauth2/ready").status_code == 200  # the operator accepted it
    finally:
        node.kill()


def test_readiness_turns_red_when_a_master_starts_evicting(as_env, tmp_path):
    """A master promoted by a failover, or reconfigured, may evict: /ready notices."""
    node = ha_support.RedisNode(tmp_path, "drifting", [])
    node.start()
    try:
        app = _app(as_env, OAUTH_HSM_REDIS_URL=f"redis://127.0.0.1:{node.port}/0")
        client = app.test_client()
        assert client.get("/oauth2/ready").status_code == 200
        node.client().config_set("maxmemory", "64mb")
        node.client().config_set("maxmemory-policy", "allkeys-lru")
        ready = client.get("/oauth2/ready")
        assert ready.status_code == 503 and ready.get_json() == {"status": "unavailable", "hsm": "ok", "redis": "evicting"}
        assert ready.headers["Retry-After"] == "3"
        node.client().config_set("maxmemory-policy", "noeviction")
        assert client.get("/oauth2/ready").status_code == 200
    finally:
        node.kill()


def test_a_cluster_node_whose_bus_port_is_taken_starts_on_new_ports(tmp_path):
    """The deployment's own start-up (ha_support._start_on_free_ports): a port picked free can be
    taken before redis-server binds it, which once aborted a node and failed a clean-clone run."""
    import socket

    dep = ha_support.ClusterDeployment(tmp_path / "cluster")
    node = dep.nodes[1]
    taken_bus = node.extra[ha_support.bus_port_slot(node)]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", int(taken_bus)))
        squatter.listen()
        dep.start()
        try:
            assert node.extra[ha_support.bus_port_slot(node)] != taken_bus
            assert "Address already in use" in (node.dir / "log.txt").read_text()
            assert dep.nodes[0].client().cluster("info")["cluster_state"] == "ok"
        finally:
            dep.stop()
