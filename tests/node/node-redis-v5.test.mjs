// node-redis v5 (@redis/client 5.x) through the sidecar to a TLS Redis, once speaking RESP2 and once
// RESP3 (HELLO 3 at connect time, carrying AUTH and SETNAME). Covers plain commands, 1,000 pipelined
// commands, MULTI/EXEC and WATCH, pub/sub, BLPOP, SELECT, client names and Lua; in RESP3 also that
// replies really arrive as RESP3 types (maps, doubles), push messages on a subscribed connection that
// still runs commands, and client-side caching (CLIENT TRACKING invalidation pushes).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BasicClientSideCache, createClient, RESP_TYPES, WatchError } from 'redis-client-v5';
import { infoField, startStack, waitFor } from './harness.mjs';

let stack;
let upstream;  // a direct connection to Redis, for checks
const clients = [];

before(async () => {
  stack = await startStack({ tls: true });
  upstream = createClient({ url: `redis://127.0.0.1:${stack.upstreamPort}` });
  upstream.on('error', () => {});
  await upstream.connect();
});

after(async () => {
  for (const c of clients) if (c.isOpen) c.destroy();
  if (upstream?.isOpen) upstream.destroy();
  await stack?.stop();
});

for (const RESP of [2, 3]) {
  const k = (name) => `nr5:${RESP}:${name}`;

  /// A connected client of the sidecar that does not reconnect.
  async function connect(options = {}) {
    const c = createClient({ url: stack.url(), RESP, socket: { reconnectStrategy: false }, ...options });
    c.on('error', () => {});  // errors surface through the rejected commands
    clients.push(c);
    await c.connect();
    return c;
  }

  /// A second connection like `c` (for subscribers and blocking commands).
  async function duplicate(c) {
    const d = c.duplicate();
    d.on('error', () => {});
    clients.push(d);
    await d.connect();
    return d;
  }

  describe(`node-redis v5 (RESP${RESP})`, { timeout: 120000 }, () => {
    it('connects and answers PING', async () => {
      const c = await connect();
      assert.equal(await c.ping(), 'PONG');
      assert.match(String(await c.info('server')), /redis_version:/);
    });

    it('connects with a password in the URL when the sidecar has no --requirepass', async (t) => {
      if (stack.direct) return t.skip('direct mode: Redis has no password');
      const c = await connect({ url: stack.url('secret') });
      assert.equal(await c.set(k('auth'), 'yes'), 'OK');
      const withUser = await connect({ url: `redis://app:secret@127.0.0.1:${stack.port}` });
      assert.equal(await withUser.get(k('auth')), 'yes');
      assert.equal(await upstream.get(k('auth')), 'yes');
    });

    it('SET, GET, INCR, HSET, HGETALL reach Redis', async () => {
      const c = await connect();
      assert.equal(await c.set(k('str'), 'value'), 'OK');
      assert.equal(await c.get(k('str')), 'value');
      assert.equal(await c.get(k('missing')), null);
      assert.equal(await c.incr(k('n')), 1);
      assert.equal(await c.incrBy(k('n'), 9), 10);
      assert.equal(await c.hSet(k('h'), { a: '1', b: '2' }), 2);
      assert.deepEqual({ ...(await c.hGetAll(k('h'))) }, { a: '1', b: '2' });
      assert.equal(await upstream.get(k('str')), 'value');
      assert.equal(await upstream.get(k('n')), '10');
      await assert.rejects(c.incr(k('str')), /not an integer/);
    });

    it('pipelines 1,000 commands with replies in order', async () => {
      const c = await connect();
      const replies = await Promise.all(Array.from({ length: 1000 }, (_, i) =>
        (i % 2 ? c.incr(k('p:count')) : c.set(k(`p:${i}`), `v${i}`))));
      replies.forEach((r, i) => assert.equal(r, i % 2 ? (i + 1) / 2 : 'OK', `reply ${i}`));
      const batch = c.multi();
      for (let i = 0; i < 1000; i += 2) batch.get(k(`p:${i}`));
      const values = await batch.execAsPipeline();
      assert.equal(values.length, 500);
      values.forEach((v, j) => assert.equal(v, `v${2 * j}`));
      assert.equal(await upstream.get(k('p:count')), '500');
    });

    it('MULTI/EXEC, and WATCH aborts on a concurrent write', async () => {
      const c = await connect();
      const other = await connect();
      assert.deepEqual(await c.multi().set(k('m'), '5').incrBy(k('m'), 2).get(k('m')).exec(), ['OK', 7, '7']);
      await c.watch(k('w'));
      await other.set(k('w'), 'changed');
      await assert.rejects(c.multi().set(k('w'), 'mine').exec(), WatchError);
      assert.equal(await upstream.get(k('w')), 'changed');
      await c.watch(k('w'));
      assert.deepEqual(await c.multi().set(k('w'), 'mine').exec(), ['OK']);
      assert.equal(await upstream.get(k('w')), 'mine');
    });

    it('delivers pub/sub messages between two clients', async () => {
      const c = await connect();
      const sub = await duplicate(c);
      const got = [];
      await sub.subscribe(k('ch'), (message, channel) => got.push([channel, message]));
      await sub.pSubscribe(k('p*'), (message, channel) => got.push([channel, message]));
      assert.equal(await c.publish(k('ch'), 'one'), 1);
      assert.equal(await c.publish(k('pz'), 'two'), 1);
      await waitFor('two messages', () => got.length >= 2);
      assert.deepEqual(got, [[k('ch'), 'one'], [k('pz'), 'two']]);
      await sub.unsubscribe(k('ch'));
      await sub.pUnsubscribe(k('p*'));
      assert.equal(await c.publish(k('ch'), 'nobody'), 0);
      // (node-redis v5 hands back a Buffer for this reply after RESP2 pub/sub, against Redis too.)
      assert.equal(String(await sub.set(k('after-sub'), '1')), 'OK');
    });

    it('BLPOP is released by another client', async () => {
      const c = await connect();
      const blocking = await duplicate(c);
      const popped = blocking.blPop(k('q'), 20);
      await waitFor('the BLPOP to block in Redis',
        async () => infoField(await upstream.info('clients'), 'blocked_clients') >= 1);
      assert.equal(await c.rPush(k('q'), 'job'), 1);
      assert.deepEqual({ ...(await popped) }, { key: k('q'), element: 'job' });
      assert.equal(await blocking.blPop(k('empty'), 0.1), null);
    });

    it('selects the database (option and SELECT)', async () => {
      const db4 = await connect({ database: 4 });
      const db0 = await connect();
      await db4.set(k('db'), 'four');
      await db0.set(k('db'), 'zero');
      assert.equal(await db4.get(k('db')), 'four');
      assert.equal(await db0.get(k('db')), 'zero');
      assert.equal(await upstream.get(k('db')), 'zero');
      await db0.select(4);
      assert.equal(await db0.get(k('db')), 'four');
    });

    it('sets the client name at connect time', async () => {
      const c = await connect({ name: `nr5-worker-${RESP}` });
      assert.equal(await c.clientGetName(), `nr5-worker-${RESP}`);
    });

    it('runs Lua with EVAL', async () => {
      const c = await connect();
      const script = "return {redis.call('INCRBY', KEYS[1], ARGV[1]), ARGV[2]}";
      assert.deepEqual(await c.eval(script, { keys: [k('lua')], arguments: ['3', 'tag'] }), [3, 'tag']);
      assert.equal(await upstream.get(k('lua')), '3');
    });

    if (RESP === 3) {
      it('receives RESP3 types: HGETALL as a map, ZSCORE as a double, HELLO reports proto 3', async () => {
        const c = await connect();
        await c.hSet(k('h3'), { f: 'v', g: 'w' });
        const asMap = await c.withTypeMapping({ [RESP_TYPES.MAP]: Map }).hGetAll(k('h3'));
        assert.ok(asMap instanceof Map, 'HGETALL reply is a RESP3 map');
        assert.deepEqual([...asMap.entries()].sort(), [['f', 'v'], ['g', 'w']]);
        await c.zAdd(k('z'), { score: 1.5, value: 'm' });
        assert.equal(await c.sendCommand(['ZSCORE', k('z'), 'm']), 1.5);  // a RESP3 double
        const hello = await c.hello(3);
        assert.equal(hello.proto, 3);
        assert.match(String(hello.version), /^\d+\.\d+/);
      });

      it('runs commands on a subscribed connection (RESP3 push messages)', async () => {
        const c = await connect();
        const sub = await duplicate(c);
        const got = [];
        await sub.subscribe(k('mixed'), (message) => got.push(message));
        await c.set(k('mixed-key'), 'x');
        assert.equal(await sub.get(k('mixed-key')), 'x');
        assert.equal(await c.publish(k('mixed'), 'm1'), 1);
        assert.equal(await sub.ping(), 'PONG');
        await waitFor('the message', () => got.length >= 1);
        assert.deepEqual(got, ['m1']);
      });

      it('client-side caching: tracked reads are invalidated by another client\'s write', async () => {
        const cache = new BasicClientSideCache({ ttl: 0, maxEntries: 0 });
        const c = await connect({ clientSideCache: cache });
        const writer = await connect();
        await writer.set(k('cached'), 'v1');
        assert.equal(await c.get(k('cached')), 'v1');
        assert.equal(await c.get(k('cached')), 'v1');
        assert.equal(cache.stats().hitCount, 1, 'the second GET came from the cache');
        await writer.set(k('cached'), 'v2');
        await waitFor('the invalidation to reach the cache', async () => (await c.get(k('cached'))) === 'v2');
      });
    }
  });
}
