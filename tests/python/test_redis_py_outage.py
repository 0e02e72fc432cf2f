"""redis-py through a Redis outage: the app's pooled connections and new ones keep getting the
values they last read or wrote, from the sidecar's L1, while Redis is down; commands L1 cannot
answer fail at once with a clear error (no client waits for a timeout); writes made meanwhile reach
Redis when it is back. Against Redis directly nothing of this can work: skipped in direct mode."""

import os
import unittest

import redis

from harness import Stack, wait_for

DIRECT = os.environ.get("REDIS_SIDECAR_TEST_DIRECT") == "1"


@unittest.skipIf(DIRECT, "an outage cannot be served without the sidecar")
class RedisPyOutage(unittest.TestCase):
    def setUp(self):
        self.stack = Stack()
        self.addCleanup(self.stack.stop)
        self.r = redis.Redis.from_url(self.stack.url(), socket_timeout=10)
        self.addCleanup(self.r.close)

    def upstream(self):
        up = redis.Redis(host="127.0.0.1", port=self.stack.upstream_port)
        self.addCleanup(up.close)
        return up

    def test_reads_and_writes_go_on_through_an_outage(self):
        r = self.r
        for i in range(100):
            r.set(f"py:user:{i}", f"name-{i}")
        r.set("py:hits", 10)
        self.assertEqual(r.get("py:user:7"), b"name-7")  # a read fills L1 too

        self.stack.stop_redis()
        # Fallback starts about a second after Redis goes (--fallback-after-ms); until then
        # requests fail (a GET may still be an L1 hit: MGET goes to Redis outside fallback). Then
        # every read L1 can answer is answered.
        keys = [f"py:user:{i}" for i in range(100)]
        values = [f"name-{i}".encode() for i in range(100)]
        wait_for("fallback", lambda: self._mget_or_none(keys) == values, 20)
        fresh = redis.Redis.from_url(self.stack.url(), socket_timeout=10)  # connects during it
        self.addCleanup(fresh.close)
        self.assertEqual(fresh.get("py:user:42"), b"name-42")
        self.assertIsNone(fresh.get("py:never-set"))  # a cache-aside miss, as the app expects

        # Writes are acknowledged, visible to reads at once, and journaled.
        self.assertTrue(r.set("py:user:7", "renamed"))
        self.assertEqual(fresh.get("py:user:7"), b"renamed")
        self.assertEqual(r.incr("py:hits"), 11)
        with r.pipeline(transaction=False) as p:
            p.set("py:during", "outage").get("py:during").delete("py:user:1")
            self.assertEqual(p.execute(), [True, b"outage", 1])

        # What L1 cannot answer is refused with the fallback's reason (given at once, never after
        # waiting: a timeout would say "upstream command timeout"), and the connection goes on.
        with self.assertRaisesRegex(
                redis.ResponseError,
                "upstream unreachable, 'hgetall' cannot be served from the local cache"):
            r.hgetall("py:h")
        self.assertEqual(r.get("py:during"), b"outage")

        # A transaction runs none of its commands: refused when queued, discarded at EXEC.
        with r.pipeline(transaction=True) as p:
            p.set("py:tx", "applied").incr("py:hits").delete("py:user:2")
            with self.assertRaisesRegex(redis.ResponseError,
                                        "'set' cannot be queued, the local cache does not serve"):
                p.execute()
        self.assertIsNone(r.get("py:tx"))
        self.assertEqual(r.get("py:hits"), b"11")
        self.assertEqual(r.get("py:user:2"), b"name-2")

        # Redis comes back empty (no persistence here): the journal replays the writes, in order.
        self.stack.start_redis()
        up = self.upstream()
        wait_for("the journal's replay", lambda: up.get("py:during") == b"outage", 30)
        self.assertEqual(up.get("py:user:7"), b"renamed")
        self.assertEqual(up.get("py:hits"), b"1")  # INCR replayed as INCR on the empty Redis
        self.assertIsNone(up.get("py:user:1"))
        self.assertIsNone(up.get("py:tx"))
        # Traffic reaches Redis again: a write through the sidecar lands there.
        wait_for("normal operation", lambda: self._set_ok("py:after", "back"), 20)
        self.assertEqual(up.get("py:after"), b"back")
        self.assertEqual(r.hgetall("py:after-h"), {})

    def _mget_or_none(self, keys):
        try:
            return self.r.mget(keys)
        except redis.RedisError:
            return None

    def _set_ok(self, key, value):
        try:
            return self.r.set(key, value)
        except redis.RedisError:
            return False


if __name__ == "__main__":
    unittest.main()
