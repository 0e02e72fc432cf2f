// BullMQ 5 (over ioredis) through the sidecar to a TLS Redis with a password (in the sidecar's
// upstream URL only): a queue, a worker and queue events, the
// way job systems use Redis: Lua scripts for every state change, blocking commands (BZPOPMIN) to
// wait for work, pub/sub-like streams (XREAD BLOCK) for events, and named connections.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Queue, QueueEvents, Worker } from 'bullmq';
import { startStack } from './harness.mjs';

let stack;
const closers = [];

before(async () => {
  stack = await startStack({ tls: true, upstreamPassword: 'upstream-secret' });
});

after(async () => {
  for (const close of closers.reverse()) await close();
  await stack?.stop();
});

describe('BullMQ', { timeout: 120000 }, () => {
  it('a worker processes jobs added to a queue', async () => {
    // Workers need maxRetriesPerRequest: null (their blocking commands must not be retried).
    const connection = { host: '127.0.0.1', port: stack.port, maxRetriesPerRequest: null };
    const queue = new Queue('sidecar-jobs', { connection });
    closers.push(() => queue.close());
    const events = new QueueEvents('sidecar-jobs', { connection });
    closers.push(() => events.close());
    await events.waitUntilReady();

    const seen = [];
    const worker = new Worker('sidecar-jobs', async (job) => {
      seen.push(job.name);
      if (job.data.fail) throw new Error('job asked to fail');
      return { sum: job.data.a + job.data.b };
    }, { connection, concurrency: 2 });
    closers.push(() => worker.close());
    await worker.waitUntilReady();

    const job = await queue.add('add', { a: 2, b: 40 });
    assert.deepEqual(await job.waitUntilFinished(events, 30000), { sum: 42 });

    // A delayed job (a sorted set the worker polls with Lua) and a failing one.
    const delayed = await queue.add('delayed', { a: 1, b: 1 }, { delay: 200 });
    const failing = await queue.add('failing', { fail: true });
    assert.deepEqual(await delayed.waitUntilFinished(events, 30000), { sum: 2 });
    await assert.rejects(failing.waitUntilFinished(events, 30000), /job asked to fail/);

    const { completed, failed, waiting, active, delayed: later } =
      await queue.getJobCounts('completed', 'failed', 'waiting', 'active', 'delayed');
    assert.deepEqual({ completed, failed, waiting, active, later }, { completed: 2, failed: 1, waiting: 0, active: 0, later: 0 });
    assert.deepEqual(seen.sort(), ['add', 'delayed', 'failing']);
  });
});
