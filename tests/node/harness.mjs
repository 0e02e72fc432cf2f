// harness: real processes for the Node.js client tests. Starts a redis-server (plaintext port, and a
// TLS port with certificates made by the openssl CLI when asked) and the built redis-sidecar binary
// in front of it, each on a free loopback port, and stops both when the test file ends.
//
// The sidecar binary comes from REDIS_SIDECAR_BINARY. With REDIS_SIDECAR_TEST_DIRECT=1 instead,
// clients talk to redis-server directly: a check of the test logic itself, never used by CTest.
//
// After the sidecar stops, its exit status and log are checked: a crash, a non-zero exit or a
// sanitizer report fails the test file.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const host = '127.0.0.1';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Safety net when a test file dies or is interrupted before its after() hook: no process or temp
// dir outlives it.
const liveChildren = new Set();
const liveDirs = new Set();
process.on('exit', () => {
  for (const proc of liveChildren) proc.kill('SIGKILL');
  for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(128 + os.constants.signals[signal]));
}

/// A loopback TCP port that nobody listens on right now.
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/// Sends one inline command on a fresh socket and resolves with the first reply line, or null when
/// the port does not answer in time.
function probe(port, command) {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    let data = '';
    const done = (v) => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(1000, () => done(null));
    sock.once('error', () => done(null));
    sock.once('connect', () => sock.write(`${command}\r\n`));
    sock.on('data', (chunk) => {
      data += chunk.toString('latin1');
      const eol = data.indexOf('\r\n');
      if (eol >= 0) done(data.slice(0, eol));
    });
  });
}

/// A child process with its output kept in memory.
class Child {
  constructor(name, file, args, env) {
    this.name = name;
    this.output = '';
    this.exit = null;
    this.proc = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    liveChildren.add(this.proc);
    const keep = (chunk) => {
      this.output += chunk.toString();
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.proc.once('error', (err) => {
        this.output += `\nspawn failed: ${err.message}`;
        this.exit = { code: -1, signal: null };
        resolve(this.exit);
      });
      this.proc.once('exit', (code, signal) => {
        liveChildren.delete(this.proc);
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
  }

  /// Resolves once `command` on `port` answers with `expected`; throws if the process exits first
  /// or it does not answer within 20 s.
  async waitReady(port, command, expected) {
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      if (this.exit) {
        throw new Error(`${this.name} exited (${JSON.stringify(this.exit)}) before answering:\n${this.output}`);
      }
      if ((await probe(port, command)) === expected) return;
      await sleep(50);
    }
    throw new Error(`${this.name} did not answer ${command} on port ${port} within 20 s:\n${this.output}`);
  }

  /// SIGTERM, then SIGKILL after 10 s. Resolves with { code, signal }.
  async stop() {
    if (!this.exit) {
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exit;
  }
}

/// A CA and a server certificate for 127.0.0.1 / localhost, in a fresh directory.
function makeCertificates(dir) {
  const run = (args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=sidecar-test-ca',
    '-keyout', 'ca.key', '-out', 'ca.crt']);
  run(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', 'server.key', '-out',
    'server.csr']);
  writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
    '-extfile', 'san.ext', '-out', 'server.crt']);
  return { ca: path.join(dir, 'ca.crt'), crt: path.join(dir, 'server.crt'), key: path.join(dir, 'server.key') };
}

/// Starts redis-server on free ports. `tls`: also a TLS port. `requirepass`: a default-user password.
async function startRedis(dir, { tls, requirepass }) {
  const certs = tls ? makeCertificates(dir) : null;
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const tlsPort = tls ? await freePort() : 0;
    const args = ['--port', String(port), '--bind', host, '--save', '', '--appendonly', 'no', '--dir', dir,
      '--daemonize', 'no', '--protected-mode', 'no'];
    if (requirepass) args.push('--requirepass', requirepass);
    if (tls) {
      args.push('--tls-port', String(tlsPort), '--tls-cert-file', certs.crt, '--tls-key-file', certs.key,
        '--tls-ca-cert-file', certs.ca, '--tls-auth-clients', 'no');
    }
    const child = new Child('redis-server', 'redis-server', args, {});
    try {
      // Unauthenticated PING gets -NOAUTH with requirepass: either way the server is up.
      await child.waitReady(port, 'PING', requirepass ? '-NOAUTH Authentication required.' : '+PONG');
      return { child, port, tlsPort, certs };
    } catch (err) {
      await child.stop();
      if (attempt >= 4) throw err;  // a port race with another process: try fresh ports
    }
  }
}

async function startSidecar(upstreamUrl, extraArgs) {
  const binary = process.env.REDIS_SIDECAR_BINARY;
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    // Metrics on an ephemeral port: the default (0.0.0.0:9379) would collide between tests.
    const args = ['--listen', `${host}:${port}`, '--upstream', upstreamUrl,
      '--metrics-listen', '127.0.0.1:0', ...extraArgs];
    const child = new Child('redis-sidecar', binary, args, {});
    try {
      await child.waitReady(port, 'PING', '+PONG');
      return { child, port };
    } catch (err) {
      await child.stop();
      if (attempt >= 4 || !/address already in use/i.test(child.output)) throw err;
    }
  }
}

/// What a sidecar's exit says about its health: null when fine, else a message.
function sidecarProblem(exit, output) {
  if (/AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/.test(output)) {
    return 'sanitizer report in the sidecar log';
  }
  const cleanExit = exit.code === 0 || exit.signal === 'SIGTERM';
  return cleanExit ? null : `sidecar ended with ${JSON.stringify(exit)} after SIGTERM`;
}

/// Starts the processes for one test file. Options:
///   tls (default true): the sidecar reaches Redis over TLS (rediss://, --tls-ca-file).
///   upstreamPassword: Redis requires this password; the sidecar's upstream URL carries it.
///   (In direct mode Redis gets no password.)
/// Returns { port, upstreamPort, upstreamPassword, upstreamUrl(), direct, url(password?, db?), stop() }:
///   port          where clients connect (the sidecar; Redis itself in direct mode)
///   upstreamPort  Redis' plaintext port, for checks that go around the sidecar
export async function startStack({ tls = true, upstreamPassword = '' } = {}) {
  const direct = process.env.REDIS_SIDECAR_TEST_DIRECT === '1';
  if (!direct && !process.env.REDIS_SIDECAR_BINARY) {
    throw new Error('REDIS_SIDECAR_BINARY is not set: point it at the built redis-sidecar ' +
      '(or set REDIS_SIDECAR_TEST_DIRECT=1 to run the clients against redis-server directly)');
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sidecar-node-'));
  liveDirs.add(dir);
  // In direct mode the clients would have to send Redis' password themselves: run without one.
  const password = direct ? '' : upstreamPassword;
  const redis = await startRedis(dir, { tls: tls && !direct, requirepass: password });
  let sidecar = null;
  if (!direct) {
    const auth = password ? `:${encodeURIComponent(password)}@` : '';
    const upstream = tls ? `rediss://${auth}${host}:${redis.tlsPort}` : `redis://${auth}${host}:${redis.port}`;
    try {
      sidecar = await startSidecar(upstream, tls ? ['--tls-ca-file', redis.certs.ca] : []);
    } catch (err) {
      await redis.child.stop();
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }
  const port = direct ? redis.port : sidecar.port;
  return {
    port,
    upstreamPort: redis.port,
    upstreamPassword: password,
    direct,
    /// A redis:// URL for Redis' plaintext port with its password, for checks around the sidecar.
    upstreamUrl() {
      const auth = password ? `:${encodeURIComponent(password)}@` : '';
      return `redis://${auth}${host}:${redis.port}`;
    },
    /// redis://[:password@]127.0.0.1:port[/db] for the client-facing port.
    url(clientPassword = '', db = null) {
      const auth = clientPassword ? `:${encodeURIComponent(clientPassword)}@` : '';
      return `redis://${auth}${host}:${port}${db === null ? '' : `/${db}`}`;
    },
    /// Stops the sidecar then Redis; throws if the sidecar did not end cleanly.
    async stop() {
      let problem = null;
      if (sidecar) {
        const exit = await sidecar.child.stop();
        problem = sidecarProblem(exit, sidecar.child.output);
        if (problem) problem += `\n--- sidecar log ---\n${sidecar.child.output}`;
      }
      await redis.child.stop();
      rmSync(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
      if (problem) throw new Error(problem);
    },
  };
}

/// Polls `check` (async, returns truthy when done) every 20 ms for up to `ms`; throws with `what`
/// when it never succeeds. For waiting on state, never for judging speed.
export async function waitFor(what, check, ms = 10000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/// A field of `INFO <section>` output as a number.
export function infoField(info, field) {
  const m = new RegExp(`^${field}:(\\d+)`, 'm').exec(info);
  return m ? Number(m[1]) : NaN;
}
