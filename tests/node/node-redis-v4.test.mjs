// @redis/client 1.x (the node-redis v4 core, RESP2 only) through the sidecar to a plaintext Redis
// that requires a password (the sidecar's upstream URL carries it; clients send none or another):
// connect-time AUTH, SELECT (URL database) and CLIENT SETNAME, plain commands, 1,000 auto-pipelined
// commands, MULTI/EXEC, WATCH on an isolated connection, pub/sub, BLPOP on the isolation pool, and
// EVAL. Writes are checked on Redis itself, around the sidecar.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { commandOptions, createClient, defineScript, WatchError } from '@redis/client';
import { infoField, startStack, waitFor } from './harness.mjs';

let stack;
let upstream;  // a direct connection to Redis, for checks
const clients = [];

/// A connected client of the sidecar (url: a redis:// URL, default the sidecar's) that does not
/// reconnect, so a dropped connection fails the test instead of hiding.
async function connect(options = {}) {
  const c = createClient({ url: stack.url(), socket: { reconnectStrategy: false }, ...options });
  c.on('error', () => {});  // errors surface through the rejected commands
  clients.push(c);
  await c.connect();
  return c;
}

before(async () => {
  stack = await startStack({ tls: false, upstreamPassword: 'upstream-secret' });
  upstream = createClient({ url: stack.upstreamUrl() });
  upstream.on('error', () => {});
  await upstream.connect();
});

after(async () => {
  for (const c of clients) if (c.isOpen) await c.disconnect();
  if (upstream?.isOpen) await upstream.disconnect();
  await stack?.stop();
});

describe('node-redis v4 (@redis/client 1.x, RESP2)', { timeout: 120000 }, () => {
  it('connects and answers PING', async () => {
    const c = await connect();
    assert.equal(await c.ping(), 'PONG');
    assert.match(await c.info('server'), /redis_version:/);
  });

  it('connects with a password in the URL when the sidecar has no --requirepass', async (t) => {
    if (stack.direct) return t.skip('direct mode: Redis has no password');
    const c = await connect({ url: stack.url('secret') });
    assert.equal(await c.set('nr4:auth', 'yes'), 'OK');
    const withUser = await connect({ url: `redis://app:secret@127.0.0.1:${stack.port}` });
    assert.equal(await withUser.get('nr4:auth'), 'yes');
    assert.equal(await upstream.get('nr4:auth'), 'yes');
  });

  it('SET, GET, INCR, HSET, HGETALL reach Redis', async () => {
    const c = await connect();
    assert.equal(await c.set('nr4:str', 'value'), 'OK');
    assert.equal(await c.get('nr4:str'), 'value');
    assert.equal(await c.get('nr4:missing'), null);
    assert.equal(await c.incr('nr4:n'), 1);
    assert.equal(await c.incrBy('nr4:n', 9), 10);
    assert.equal(await c.hSet('nr4:h', { a: '1', b: '2' }), 2);
    assert.deepEqual({ ...(await c.hGetAll('nr4:h')) }, { a: '1', b: '2' });
    assert.equal(await upstream.get('nr4:str'), 'value');
    assert.equal(await upstream.get('nr4:n'), '10');
    assert.equal(await upstream.hGet('nr4:h', 'b'), '2');
  });

  it('pipelines 1,000 commands (auto-pipelining and execAsPipeline)', async () => {
    const c = await connect();
    const replies = await Promise.all(Array.from({ length: 1000 }, (_, i) =>
      (i % 2 ? c.incr('nr4:p:count') : c.set(`nr4:p:${i}`, `v${i}`))));
    replies.forEach((r, i) => assert.equal(r, i % 2 ? (i + 1) / 2 : 'OK', `reply ${i}`));
    const batch = c.multi();
    for (let i = 0; i < 1000; i += 2) batch.get(`nr4:p:${i}`);
    const values = await batch.execAsPipeline();
    assert.equal(values.length, 500);
    values.forEach((v, j) => assert.equal(v, `v${2 * j}`));
    assert.equal(await upstream.get('nr4:p:count'), '500');
  });

  it('MULTI/EXEC, and WATCH on an isolated connection aborts on a concurrent write', async () => {
    const c = await connect();
    assert.deepEqual(await c.multi().set('nr4:m', '5').incrBy('nr4:m', 2).get('nr4:m').exec(),
      ['OK', 7, '7']);
    await assert.rejects(c.executeIsolated(async (iso) => {
      await iso.watch('nr4:w');
      await c.set('nr4:w', 'changed');  // another connection writes the watched key
      return iso.multi().set('nr4:w', 'mine').exec();
    }), WatchError);
    assert.equal(await upstream.get('nr4:w'), 'changed');
    const ok = await c.executeIsolated(async (iso) => {
      await iso.watch('nr4:w');
      return iso.multi().set('nr4:w', 'mine').exec();
    });
    assert.deepEqual(ok, ['OK']);
    assert.equal(await upstream.get('nr4:w'), 'mine');
  });

  it('delivers pub/sub messages between two clients', async () => {
    const c = await connect();
    const sub = c.duplicate();
    sub.on('error', () => {});
    clients.push(sub);
    await sub.connect();
    const got = [];
    await sub.subscribe('nr4:ch', (message, channel) => got.push([channel, message]));
    await sub.pSubscribe('nr4:p*', (message, channel) => got.push([channel, message]));
    assert.equal(await c.publish('nr4:ch', 'one'), 1);
    assert.equal(await c.publish('nr4:pz', 'two'), 1);
    await waitFor('two messages', () => got.length >= 2);
    assert.deepEqual(got, [['nr4:ch', 'one'], ['nr4:pz', 'two']]);
    await sub.unsubscribe('nr4:ch');
    await sub.pUnsubscribe('nr4:p*');
    assert.equal(await c.publish('nr4:ch', 'nobody'), 0);
    assert.equal(await sub.set('nr4:after-sub', '1'), 'OK');
  });

  it('BLPOP on the isolation pool is released by another client', async () => {
    const c = await connect();
    const popped = c.blPop(commandOptions({ isolated: true }), 'nr4:q', 20);
    await waitFor('the BLPOP to block in Redis',
      async () => infoField(await upstream.info('clients'), 'blocked_clients') >= 1);
    assert.equal(await c.rPush('nr4:q', 'job'), 1);
    assert.deepEqual({ ...(await popped) }, { key: 'nr4:q', element: 'job' });
    assert.equal(await c.blPop(commandOptions({ isolated: true }), 'nr4:empty', 0.1), null);
  });

  it('selects the database from the URL and with SELECT', async () => {
    const db2 = await connect({ url: stack.url('', 2) });
    const db0 = await connect();
    await db2.set('nr4:db', 'two');
    await db0.set('nr4:db', 'zero');
    assert.equal(await db2.get('nr4:db'), 'two');
    assert.equal(await db0.get('nr4:db'), 'zero');
    await upstream.select(2);
    assert.equal(await upstream.get('nr4:db'), 'two');
    await upstream.select(0);
    await db0.select(2);
    assert.equal(await db0.get('nr4:db'), 'two');
  });

  it('sets the client name (name option)', async () => {
    const c = await connect({ name: 'nr4-worker' });
    assert.equal(await c.clientGetName(), 'nr4-worker');
    assert.equal(await c.clientSetName('renamed'), 'OK');
    assert.equal(await c.clientGetName(), 'renamed');
  });

  it('runs Lua with EVAL and a defined script (EVALSHA)', async () => {
    const c = await connect();
    const script = "return {redis.call('INCRBY', KEYS[1], ARGV[1]), ARGV[2]}";
    assert.deepEqual(await c.eval(script, { keys: ['nr4:lua'], arguments: ['3', 'tag'] }), [3, 'tag']);
    assert.equal(await upstream.get('nr4:lua'), '3');
    const scripted = await connect({
      scripts: {
        bump: defineScript({
          NUMBER_OF_KEYS: 1,
          SCRIPT: "return redis.call('INCRBY', KEYS[1], ARGV[1])",
          transformArguments: (key, by) => [key, String(by)],
          transformReply: (reply) => reply,
        }),
      },
    });
    assert.equal(await upstream.scriptFlush(), 'OK');
    assert.equal(await scripted.bump('nr4:lua2', 4), 4);  // EVALSHA -> NOSCRIPT -> EVAL
    assert.equal(await scripted.bump('nr4:lua2', 4), 8);  // EVALSHA hits
    await assert.rejects(c.eval("return redis.error_reply('boom')"), /boom/);
  });
});
