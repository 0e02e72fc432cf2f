"""redis-py (Debian's python3-redis, RESP2) through the sidecar to a TLS Redis: a URL with a
database, plain commands, a connection pool shared by 32 threads (and what it costs upstream),
pipelines and transactions with WATCH retries, pub/sub with redis-py's health checks and a pub/sub
connection going back to the pool, blocking commands (and a worker giving up on one), Lua and
redis-py's Lock, client commands, SCAN, binary and large values, errors, and the asyncio client. Writes are checked on Redis itself,
around the sidecar, so a reply made up by the sidecar cannot pass."""

import asyncio
import threading
import time
import unittest

import redis
import redis.asyncio

from harness import Stack, wait_for

stack = None


def setUpModule():
    global stack
    stack = Stack()


def tearDownModule():
    stack.stop()


class RedisPy(unittest.TestCase):
    def setUp(self):
        self.r = redis.Redis.from_url(stack.url())
        self.up = redis.Redis(host="127.0.0.1", port=stack.upstream_port)  # around the sidecar
        self.up.flushall()

    def tearDown(self):
        self.r.close()
        self.up.close()

    def test_url_with_a_database_and_plain_commands(self):
        r3 = redis.Redis.from_url(stack.url(db=3))
        self.addCleanup(r3.close)
        self.assertTrue(r3.set("py:k", "v1", ex=100))
        self.assertEqual(r3.get("py:k"), b"v1")
        self.assertEqual(r3.incrby("py:n", 5), 5)
        r3.hset("py:h", mapping={"a": "1", "b": "2"})
        self.assertEqual(r3.hgetall("py:h"), {b"a": b"1", b"b": b"2"})
        self.assertTrue(0 < r3.ttl("py:k") <= 100)
        up3 = redis.Redis(host="127.0.0.1", port=stack.upstream_port, db=3)
        self.addCleanup(up3.close)
        self.assertEqual(up3.get("py:k"), b"v1")
        self.assertEqual(up3.get("py:n"), b"5")
        self.assertIsNone(self.up.get("py:k"))  # not in db 0
        self.assertIsNone(self.r.get("py:k"))

    def test_a_pool_shared_by_32_threads_uses_few_upstream_connections(self):
        pool = redis.ConnectionPool.from_url(stack.url(), max_connections=64)
        shared = redis.Redis(connection_pool=pool)
        self.addCleanup(pool.disconnect)
        errors = []
        upstream_clients = []
        done = threading.Event()

        def worker(t):
            try:
                for i in range(300):
                    key = f"py:pool:{t}:{i % 20}"
                    shared.set(key, f"{t}-{i}")
                    if shared.get(key) != f"{t}-{i}".encode():
                        errors.append(f"thread {t}: wrong value at {i}")
                        return
            except Exception as e:  # reported below
                errors.append(f"thread {t}: {e!r}")

        def sample():  # upstream connections while the threads run, seen by Redis
            while not done.is_set():
                upstream_clients.append(self.up.info("clients")["connected_clients"] - 1)
                time.sleep(0.01)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(32)]
        sampler = threading.Thread(target=sample)
        sampler.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        sampler.join()
        self.assertEqual(errors, [])
        self.assertEqual(self.up.get("py:pool:31:19"), b"31-299")
        self.assertGreater(pool._created_connections, 8)  # the app really opened many
        if not stack.direct:
            # The sidecar's default pool (2 connections per protocol; RESP2 only here), its health
            # probe's connection and the near cache's tracking connection.
            self.assertLessEqual(max(upstream_clients), 4, f"over {len(upstream_clients)} samples")

    def test_pipelines_and_transactions(self):
        pipe = self.r.pipeline(transaction=False)
        for i in range(1000):
            pipe.set(f"py:p:{i}", i)
            pipe.incr("py:p:count")
        replies = pipe.execute()
        self.assertEqual(replies[1::2], list(range(1, 1001)))
        self.assertEqual(self.up.get("py:p:999"), b"999")

        with self.r.pipeline(transaction=True) as tx:
            tx.incr("py:tx").incr("py:tx").get("py:tx")
            self.assertEqual(tx.execute(), [1, 2, b"2"])

        # WATCH: a write by another client between WATCH and EXEC makes redis-py retry.
        other = redis.Redis.from_url(stack.url())
        self.addCleanup(other.close)
        self.r.set("py:balance", 100)
        attempts = []

        def withdraw(p):
            attempts.append(1)
            balance = int(p.get("py:balance"))
            if len(attempts) == 1:
                other.incrby("py:balance", 50)  # lands after WATCH: this attempt must fail
            p.multi()
            p.set("py:balance", balance - 30)

        self.r.transaction(withdraw, "py:balance")
        self.assertEqual(len(attempts), 2)
        self.assertEqual(self.up.get("py:balance"), b"120")

    def test_pubsub_with_health_checks_then_the_connection_serves_commands(self):
        r = redis.Redis.from_url(stack.url(), health_check_interval=1)
        self.addCleanup(r.close)
        p = r.pubsub()
        p.subscribe("py:ch")
        p.psubscribe("py:news.*")
        wait_for("both subscriptions",
                 lambda: self.up.pubsub_numsub("py:ch")[0][1] == 1 and self.up.pubsub_numpat() == 1)
        got = []
        time.sleep(1.2)  # the next get_message sends redis-py's health-check PING first
        self.assertEqual(self.up.publish("py:ch", "hello"), 1)
        self.assertEqual(self.up.publish("py:news.sport", "goal"), 1)
        for _ in range(50):
            m = p.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if m:
                got.append((m["type"], m["channel"], m["data"]))
            if len(got) == 2:
                break
        self.assertEqual(got, [("message", b"py:ch", b"hello"), ("pmessage", b"py:news.sport", b"goal")])
        time.sleep(1.2)
        self.assertIsNone(p.get_message(ignore_subscribe_messages=True, timeout=0.2))  # PING again

        conn = p.connection
        p.close()  # UNSUBSCRIBE/PUNSUBSCRIBE, then the connection goes back to r's pool
        self.assertIn(conn, r.connection_pool._available_connections)
        for i in range(20):  # the pool hands that connection out again for plain commands
            self.assertTrue(r.set(f"py:after:{i}", i))
            self.assertEqual(r.get(f"py:after:{i}"), str(i).encode())
        self.assertEqual(r.client_info()["flags"], "N")

    def test_pubsub_run_in_thread_keeps_order(self):
        got = []
        p = self.r.pubsub()
        p.subscribe(**{"py:feed": lambda m: got.append(m["data"])})
        worker = p.run_in_thread(sleep_time=0.01)
        self.addCleanup(worker.stop)
        wait_for("the subscription", lambda: self.up.pubsub_numsub("py:feed")[0][1] == 1)
        for i in range(200):
            self.r.publish("py:feed", i)
        wait_for("200 messages", lambda: len(got) >= 200)
        self.assertEqual(got, [str(i).encode() for i in range(200)])

    def test_blocking_commands(self):
        self.assertIsNone(self.r.blpop("py:empty", timeout=1))  # times out with nil

        other = redis.Redis.from_url(stack.url())
        self.addCleanup(other.close)
        result = {}
        t = threading.Thread(target=lambda: result.update(v=self.r.blpop(["py:q1", "py:q2"], 10)))
        t.start()
        wait_for("BLPOP to block", lambda: self.up.info("clients")["blocked_clients"] == 1)
        other.rpush("py:q2", "job")
        t.join()
        self.assertEqual(result["v"], (b"py:q2", b"job"))
        self.r.rpush("py:src", "a", "b")
        self.assertEqual(self.r.blmove("py:src", "py:dst", 1, "LEFT", "RIGHT"), b"a")
        self.assertEqual(self.up.lrange("py:dst", 0, -1), [b"a"])

    def test_a_worker_that_gives_up_on_blpop_takes_no_later_job(self):
        # A worker whose client-side timeout is shorter than its BLPOP's: redis-py gives up and
        # drops the connection. The job pushed right after must stay queued for the next worker,
        # as on Redis, not go to the BLPOP the worker left.
        worker = redis.Redis.from_url(stack.url(), socket_timeout=0.05)
        self.addCleanup(worker.close)
        lost = []
        for i in range(10):
            with self.assertRaises(redis.exceptions.TimeoutError):
                worker.blpop("py:jobs", timeout=5)
            self.r.rpush("py:jobs", f"job-{i}")
            wait_for("Redis to end the BLPOP the worker left",
                     lambda: self.up.info("clients")["blocked_clients"] == 0)
            if self.up.lpop("py:jobs") != f"job-{i}".encode():
                lost.append(i)
        self.assertEqual(lost, [])

    def test_lua_scripts_and_lock(self):
        incr_by = self.r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        self.assertEqual(incr_by(keys=["py:lua"], args=[7]), 7)
        self.up.script_flush()  # redis-py's Script then meets NOSCRIPT and loads it again
        self.assertEqual(incr_by(keys=["py:lua"], args=[3]), 10)
        self.assertEqual(self.up.get("py:lua"), b"10")

        lock = self.r.lock("py:lock", timeout=10)
        self.assertTrue(lock.acquire(blocking=False))
        rival = self.r.lock("py:lock", timeout=10)
        self.assertFalse(rival.acquire(blocking=False))
        self.assertTrue(lock.owned())
        lock.release()
        self.assertTrue(rival.acquire(blocking=False))
        rival.release()
        self.assertIsNone(self.up.get("py:lock"))

    def test_client_commands(self):
        self.r.client_setname("py-worker")
        self.assertEqual(self.r.client_getname(), "py-worker")
        my_id = self.r.client_id()
        listed = {c["id"]: c for c in self.r.client_list()}
        self.assertEqual(listed[str(my_id)]["name"], "py-worker")

        victim = redis.Redis.from_url(stack.url())
        self.addCleanup(victim.close)
        victim_id = victim.client_id()
        self.assertIn(str(victim_id), {c["id"] for c in self.r.client_list()})
        self.assertEqual(self.r.client_kill_filter(_id=victim_id), 1)
        try:
            new_id = victim.client_id()  # redis-py may reconnect at once
        except redis.ConnectionError:
            new_id = victim.client_id()
        self.assertNotEqual(new_id, victim_id)

    def test_scan_iter(self):
        for i in range(0, 500, 100):
            self.r.mset({f"py:scan:{j}": j for j in range(i, i + 100)})
        self.r.set("py:other", 1)
        keys = set(self.r.scan_iter(match="py:scan:*", count=50))
        self.assertEqual(keys, {f"py:scan:{j}".encode() for j in range(500)})

    def test_binary_and_large_values(self):
        blob = bytes(range(256)) * 4
        self.r.set(b"py:bin\r\n\x00key", blob)
        self.assertEqual(self.r.get(b"py:bin\r\n\x00key"), blob)
        big = b"x" * (4 << 20)
        self.r.set("py:big", big)
        self.assertEqual(self.r.get("py:big"), big)
        self.assertEqual(self.up.strlen("py:big"), 4 << 20)

    def test_errors_leave_the_connection_usable(self):
        with self.assertRaisesRegex(redis.ResponseError, "unknown command"):
            self.r.execute_command("NOSUCHCOMMAND", "x")
        self.r.set("py:str", "v")
        with self.assertRaisesRegex(redis.ResponseError, "WRONGTYPE"):
            self.r.lpush("py:str", "x")
        with self.assertRaisesRegex(redis.ResponseError, "wrong number of arguments"):
            self.r.execute_command("GET")
        self.assertEqual(self.r.get("py:str"), b"v")

    def test_asyncio_client(self):
        async def main():
            r = redis.asyncio.from_url(stack.url())
            try:
                await asyncio.gather(*(r.set(f"py:aio:{i}", i) for i in range(200)))
                values = await asyncio.gather(*(r.get(f"py:aio:{i}") for i in range(200)))
                self.assertEqual(values, [str(i).encode() for i in range(200)])
                p = r.pubsub()
                await p.subscribe("py:aio:ch")
                # subscribe() only sends: a message published before Redis confirmed the
                # subscription may be missed (through the sidecar the first subscription of all
                # also waits for an upstream connection of its own). Wait for the confirmation.
                confirmed = await p.get_message(timeout=5)
                self.assertEqual(confirmed["type"], "subscribe")
                await r.publish("py:aio:ch", "ping")
                message = None
                for _ in range(50):
                    message = await p.get_message(ignore_subscribe_messages=True, timeout=0.2)
                    if message:
                        break
                self.assertEqual(message["data"], b"ping")
                await p.unsubscribe()
                await p.close()
            finally:
                await r.close()

        asyncio.run(main())
        self.assertEqual(self.up.get("py:aio:199"), b"199")


if __name__ == "__main__":
    unittest.main()
