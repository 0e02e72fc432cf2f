// ioredis 5 (RESP2 only) through the sidecar to a TLS Redis: connection options that send commands
// at connect time (AUTH, SELECT, CLIENT SETNAME, the INFO ready check), plain commands, a 1,000
// command pipeline, auto-pipelining, MULTI/EXEC and WATCH, pub/sub, BLPOP, Lua (EVAL and EVALSHA
// with the NOSCRIPT fallback) and binary values. Writes are checked on Redis itself, around the
// sidecar, so a reply made up by the sidecar cannot pass.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Redis from 'ioredis';
import { infoField, startStack, waitFor } from './harness.mjs';

let stack;
let upstream;  // a direct connection to Redis, for checks
const clients = [];

/// A client of the sidecar that fails fast instead of retrying forever.
function client(options = {}) {
  const c = new Redis({
    host: '127.0.0.1',
    port: stack.port,
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
    ...options,
  });
  c.on('error', () => {});  // errors surface through the rejected commands
  clients.push(c);
  return c;
}

before(async () => {
  stack = await startStack({ tls: true });
  upstream = new Redis({ host: '127.0.0.1', port: stack.upstreamPort, retryStrategy: () => null });
});

after(async () => {
  for (const c of clients) c.disconnect();
  upstream?.disconnect();
  await stack?.stop();
});

describe('ioredis (RESP2)', { timeout: 120000 }, () => {
  it('connects and passes the INFO ready check', async () => {
    const c = client({ enableReadyCheck: true, lazyConnect: true });
    // Capture what ioredis' ready check (an INFO command at connect time) saw.
    let checked = null;
    const readyCheck = c._readyCheck;
    c._readyCheck = function (callback) {
      return readyCheck.call(this, (err, info) => {
        checked = { err, info };
        callback(err, info);
      });
    };
    await c.connect();
    assert.equal(c.status, 'ready');
    assert.ok(checked, 'the ready check ran');
    assert.equal(checked.err, null);
    assert.match(checked.info.redis_version, /^\d+\.\d+/);
    assert.equal(checked.info.loading, '0');
    assert.equal(await c.ping(), 'PONG');
    assert.match(await c.info('server'), /redis_version:/);
  });

  it('connects with a password in the URL when the sidecar has no --requirepass', async (t) => {
    if (stack.direct) return t.skip('direct mode: Redis has no password');
    const c = new Redis(stack.url('secret'), { retryStrategy: () => null, maxRetriesPerRequest: 0 });
    c.on('error', () => {});
    clients.push(c);
    assert.equal(await c.ping(), 'PONG');
    const withUser = new Redis(`redis://app:secret@127.0.0.1:${stack.port}`, { retryStrategy: () => null });
    withUser.on('error', () => {});
    clients.push(withUser);
    assert.equal(await withUser.set('io:auth', 'yes'), 'OK');
    assert.equal(await upstream.get('io:auth'), 'yes');
  });

  it('SET, GET, INCR, HSET, HGETALL reach Redis', async () => {
    const c = client();
    assert.equal(await c.set('io:str', 'héllo'), 'OK');
    assert.equal(await c.get('io:str'), 'héllo');
    assert.equal(await c.get('io:missing'), null);
    assert.equal(await c.incr('io:n'), 1);
    assert.equal(await c.incrby('io:n', 41), 42);
    assert.equal(await c.hset('io:h', { a: '1', b: '2', c: '' }), 3);
    assert.deepEqual(await c.hgetall('io:h'), { a: '1', b: '2', c: '' });
    assert.equal(await upstream.get('io:str'), 'héllo');
    assert.equal(await upstream.get('io:n'), '42');
    assert.deepEqual(await upstream.hgetall('io:h'), { a: '1', b: '2', c: '' });
    await assert.rejects(c.incr('io:str'), /not an integer/);
  });

  it('runs a pipeline of 1,000 commands with replies in order', async () => {
    const c = client();
    const p = c.pipeline();
    for (let i = 0; i < 500; i++) p.set(`io:p:${i}`, `v${i}`);
    for (let i = 0; i < 500; i++) i % 2 ? p.get(`io:p:${i}`) : p.incr('io:p:count');
    const results = await p.exec();
    assert.equal(results.length, 1000);
    for (let i = 0; i < 500; i++) assert.deepEqual(results[i], [null, 'OK']);
    let count = 0;
    for (let i = 0; i < 500; i++) {
      const expected = i % 2 ? `v${i}` : ++count;
      assert.deepEqual(results[500 + i], [null, expected], `reply ${500 + i}`);
    }
    assert.equal(await upstream.get('io:p:count'), '250');
  });

  it('auto-pipelines 1,000 concurrent commands', async () => {
    const c = client({ enableAutoPipelining: true });
    await c.set('io:ap', '0');
    const replies = await Promise.all(Array.from({ length: 1000 }, (_, i) =>
      (i % 4 === 0 ? c.incr('io:ap') : c.echo(`e${i}`))));
    let count = 0;
    replies.forEach((r, i) => assert.equal(r, i % 4 === 0 ? ++count : `e${i}`));
    assert.equal(await upstream.get('io:ap'), '250');
  });

  it('MULTI/EXEC applies atomically and WATCH aborts on a concurrent write', async () => {
    const c = client();
    const other = client();
    const replies = await c.multi().set('io:m', 'a').append('io:m', 'b').get('io:m').exec();
    assert.deepEqual(replies, [[null, 'OK'], [null, 2], [null, 'ab']]);

    await c.watch('io:w');
    await other.set('io:w', 'changed');
    assert.equal(await c.multi().set('io:w', 'mine').exec(), null);
    assert.equal(await upstream.get('io:w'), 'changed');

    await c.watch('io:w');
    assert.deepEqual(await c.multi().set('io:w', 'mine').exec(), [[null, 'OK']]);
    assert.equal(await upstream.get('io:w'), 'mine');
    // The connection is usable for ordinary commands after the transaction.
    assert.equal(await c.get('io:w'), 'mine');
  });

  it('delivers pub/sub messages between two clients', async () => {
    const sub = client();
    const pub = client();
    const got = [];
    sub.on('message', (channel, message) => got.push(['message', channel, message]));
    sub.on('pmessage', (pattern, channel, message) => got.push(['pmessage', pattern, channel, message]));
    assert.equal(await sub.subscribe('io:ch'), 1);
    assert.equal(await sub.psubscribe('io:p*'), 2);
    assert.equal(await pub.publish('io:ch', 'hello'), 1);
    assert.equal(await pub.publish('io:pq', 'world'), 1);
    await waitFor('two messages', () => got.length >= 2);
    assert.deepEqual(got, [['message', 'io:ch', 'hello'], ['pmessage', 'io:p*', 'io:pq', 'world']]);
    assert.equal(await sub.unsubscribe('io:ch'), 1);
    assert.equal(await sub.punsubscribe('io:p*'), 0);
    assert.equal(await pub.publish('io:ch', 'nobody'), 0);
    // Out of subscribed mode, the same connection runs ordinary commands again.
    assert.equal(await sub.set('io:after-sub', '1'), 'OK');
  });

  it('BLPOP blocks until another client pushes', async () => {
    const blocked = client();
    const pusher = client();
    const popped = blocked.blpop('io:q', 20);
    await waitFor('the BLPOP to block in Redis',
      async () => infoField(await upstream.info('clients'), 'blocked_clients') >= 1);
    assert.equal(await pusher.rpush('io:q', 'job-1'), 1);
    assert.deepEqual(await popped, ['io:q', 'job-1']);
    // A BLPOP with data already there returns at once, and a timeout returns null.
    await pusher.rpush('io:q', 'job-2');
    assert.deepEqual(await blocked.blpop('io:q', 1), ['io:q', 'job-2']);
    assert.equal(await blocked.blpop('io:empty', 0.1), null);
  });

  it('keeps each connection on its own database (db option)', async () => {
    const db3 = client({ db: 3 });
    const db5 = client({ db: 5 });
    const db0 = client();
    await Promise.all([db3.set('io:db', 'three'), db5.set('io:db', 'five'), db0.set('io:db', 'zero')]);
    const reads = await Promise.all([db3.get('io:db'), db5.get('io:db'), db0.get('io:db')]);
    assert.deepEqual(reads, ['three', 'five', 'zero']);
    const check = new Redis({ host: '127.0.0.1', port: stack.upstreamPort, db: 3 });
    try {
      assert.equal(await check.get('io:db'), 'three');
    } finally {
      check.disconnect();
    }
    assert.equal(await db3.select(5), 'OK');
    assert.equal(await db3.get('io:db'), 'five');
  });

  it('sets the client name (connectionName)', async () => {
    const c = client({ connectionName: 'io-worker-1' });
    assert.equal(await c.client('GETNAME'), 'io-worker-1');
    const unnamed = client();
    assert.equal(await unnamed.client('GETNAME'), null);
  });

  it('runs Lua with EVAL and with EVALSHA after SCRIPT FLUSH (NOSCRIPT fallback)', async () => {
    const c = client();
    const script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[2], ARGV[2])";
    assert.equal(await c.eval(script, 2, 'io:lua:s', 'io:lua:n', 'set-by-lua', 7), 7);
    assert.equal(await upstream.get('io:lua:s'), 'set-by-lua');
    c.defineCommand('bumpTwice', { numberOfKeys: 1, lua: "redis.call('INCR', KEYS[1]); return redis.call('INCR', KEYS[1])" });
    assert.equal(await upstream.script('FLUSH'), 'OK');
    assert.equal(await c.bumpTwice('io:lua:b'), 2);  // EVALSHA -> NOSCRIPT -> EVAL
    assert.equal(await c.bumpTwice('io:lua:b'), 4);  // EVALSHA hits
    await assert.rejects(c.eval("return redis.error_reply('boom')", 0), /boom/);
  });

  it('round-trips binary and large values', async () => {
    const c = client();
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    assert.equal(await c.set('io:bin', bytes), 'OK');
    assert.deepEqual(await c.getBuffer('io:bin'), bytes);
    const big = Buffer.alloc(3 * 1024 * 1024 + 17, 'x');
    big.write('\r\n$5\r\n*1\r\n', 1000);
    assert.equal(await c.set('io:big', big), 'OK');
    assert.deepEqual(await c.getBuffer('io:big'), big);
    assert.equal(await upstream.strlen('io:big'), big.length);
  });
});
