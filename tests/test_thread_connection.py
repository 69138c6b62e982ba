"""The per-thread Redis connection of the token path (store/thread_connection.py), on a real redis-server."""

import os
import threading
import time

import pytest
import redis

from flask_oauth_hsm.store.connection import connect
from flask_oauth_hsm.store.thread_connection import ThreadConnections, thread_executor


def test_each_thread_keeps_its_own_connection(own_redis):
    client = connect(own_redis.url, 0.5)
    execute = thread_executor(client)
    seen = []

    def work():
        for _ in range(3):
            execute("INCR", "n")
        seen.append(execute("CLIENT", "ID"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(client.get("n")) == 12
    assert len(set(seen)) == 4  # four connections, one per thread
    assert execute("CLIENT", "ID") == execute("CLIENT", "ID")  # reused within a thread


def test_a_restarted_redis_is_reconnected_before_the_next_command(own_redis):
    execute = thread_executor(connect(own_redis.url, 0.5))
    execute("SET", "k", 1)
    own_redis.restart()
    assert execute("SET", "k", 2) == b"OK"  # the dead socket was noticed (EOF) and replaced


def test_a_failed_command_drops_the_connection_and_the_next_one_is_clean(own_redis):
    execute = thread_executor(connect(own_redis.url, 0.5))
    first = execute("CLIENT", "ID")
    with pytest.raises(redis.TimeoutError):
        execute("BLPOP", "nothing", 1)  # the reply arrives after the timeout: never read by anyone
    assert execute("CLIENT", "ID") != first
    time.sleep(0.7)  # past the BLPOP: its late reply went to the closed socket
    assert execute("ECHO", "after") == b"after"


def test_an_error_reply_keeps_the_connection(own_redis):
    execute = thread_executor(connect(own_redis.url, 0.5))
    first = execute("CLIENT", "ID")
    with pytest.raises(redis.ResponseError):
        execute("EVALSHA", "0" * 40, 0)
    assert execute("CLIENT", "ID") == first


def test_a_forked_child_makes_its_own_connection(own_redis):
    execute = thread_executor(connect(own_redis.url, 0.5))
    parent = execute("CLIENT", "ID")
    pid = os.fork()
    if pid == 0:  # the child: a new connection; the parent's socket untouched
        os._exit(0 if execute("CLIENT", "ID") != parent else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert execute("CLIENT", "ID") == parent


def test_sentinel_and_cluster_clients_keep_their_own_routing():
    class Routed(redis.Redis):  # anything but a plain client on a plain pool
        pass

    client = Routed()
    assert not isinstance(getattr(thread_executor(client), "__self__", None), ThreadConnections)
