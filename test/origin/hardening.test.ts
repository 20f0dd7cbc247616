import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpOriginClient } from '../../functions/upstream/client';
import { createOriginApp } from '../../origin/app';
import { protocolBodyLimit } from '../../origin/body-limit';
import { ForwardQueue } from '../../origin/queue';
import { TargetModel } from '../../origin/target';
import { signRequest } from '../../shared/origin-auth';
import type { OriginHealth, VerifyResponse } from '../../shared/protocol';
import { loadNodeModel, TARGET_DIR } from '../support/models';

/**
 * The origin behind a real listening socket (@hono/node-server, as origin/main.ts
 * serves it): body caps before reading, client disconnects, key rotation across
 * a restart. Ports are picked by the OS (port 0), never fixed.
 */
const secret = 'hardening-secret-0123456789abcdef';
const greedy = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };
const verifyBody = JSON.stringify({ context: [10, 20, 30, 40, 50], draft: [{ token: 5 }, { token: 6 }], sampling: greedy });
const MiB = 2 ** 20;

interface Listening {
  url: string;
  close(): Promise<void>;
}

async function listen(app: { fetch: (request: Request) => Response | Promise<Response> }): Promise<Listening> {
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as http.Server;
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function signedPost(url: string, path: string, text: string, init: { signal?: AbortSignal; keyId?: string; secret?: string } = {}): Promise<Response> {
  const headers = await signRequest(init.secret ?? secret, 'POST', path, text, Date.now(), init.keyId);
  return fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: text, signal: init.signal });
}

const health = async (url: string) => (await (await fetch(url + '/health')).json()) as OriginHealth;

/**
 * A POST over a raw socket: writes `chunkBytes` at a time (honouring backpressure) until the
 * origin answers or `maxBytes` are out, and reports how much had been sent when the answer came.
 */
function postUntilAnswered(
  url: string,
  headers: Record<string, string | number>,
  options: { chunkBytes: number; maxBytes: number },
): Promise<{ status: number; body: string; ms: number; sentBeforeAnswer: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let sent = 0;
    let answered = false;
    const request = http.request(url + '/v1/verify', { method: 'POST', headers });
    request.on('response', (response) => {
      answered = true;
      const result = { status: response.statusCode!, ms: performance.now() - started, sentBeforeAnswer: sent };
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        request.destroy();
        resolve({ ...result, body });
      });
    });
    // The origin may reset the connection after answering: only an error before the answer fails the test.
    request.on('error', (err) => {
      if (!answered) reject(err);
    });
    const chunk = Buffer.alloc(options.chunkBytes, 0x20);
    const pump = () => {
      while (!answered && sent < options.maxBytes) {
        sent += chunk.length;
        if (!request.write(chunk)) return void request.once('drain', pump);
      }
    };
    pump();
  });
}

describe('origin behind a socket: body cap, disconnects', () => {
  let queue: ForwardQueue;
  let origin: Listening;
  let maxBodyBytes: number;
  beforeAll(async () => {
    const model = await loadNodeModel(TARGET_DIR);
    queue = new ForwardQueue(1, 64);
    maxBodyBytes = protocolBodyLimit(model.config.maxPositions);
    const app = createOriginApp({ id: 'hardening', modelName: 'edgespec-target', target: new TargetModel(model.lm), keys: new Map([['default', secret]]), queue });
    origin = await listen(app);
  });
  afterAll(() => origin?.close());

  it('derives its default body cap from the protocol: room for the largest valid draft, far below 100 MB', () => {
    // 64 draft tokens × 4096 q pairs is the schema's limit; the cap must fit them and the model's context.
    const largestDraft = JSON.stringify({
      context: Array.from({ length: 1024 }, () => 4095),
      draft: Array.from({ length: 64 }, () => ({ token: 4095, q: Array.from({ length: 4096 }, () => [4095, 0.012345678901234567]) })),
      sampling: { temperature: 1, top_p: 0.95, top_k: 4096, seed: 4294967295, offset: 123456 },
      method: 'block',
      cache_salt: 'x'.repeat(256),
    });
    expect(largestDraft.length).toBeLessThan(maxBodyBytes);
    expect(maxBodyBytes).toBeLessThan(10 * MiB);
  });

  it('refuses a declared 100 MB body with 413 body_too_large at once, before reading it, even unsigned; a verify right after works', async () => {
    const served = queue.stats().served;
    // 64 KiB written of 100 MB declared: an answer now means the origin never waited for the body.
    const result = await postUntilAnswered(origin.url, { 'content-type': 'application/json', 'content-length': 100 * MiB }, { chunkBytes: 64 * 1024, maxBytes: 64 * 1024 });
    expect(result.status).toBe(413);
    expect(JSON.parse(result.body)).toMatchObject({ error: { type: 'invalid_request_error', code: 'body_too_large', message: expect.stringMatching(/limit of 8\.\d+ MiB/) } });
    expect(result.ms).toBeLessThan(1000);
    expect(result.sentBeforeAnswer).toBe(64 * 1024);
    const ok = await signedPost(origin.url, '/v1/verify', verifyBody);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as VerifyResponse).tokens.length).toBeGreaterThan(0);
    expect(queue.stats().served).toBe(served + 1);
  });

  it('stops reading a chunked body (no content-length) at the cap with 413', async () => {
    const result = await postUntilAnswered(origin.url, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, { chunkBytes: 256 * 1024, maxBytes: 100 * MiB });
    expect(result.status).toBe(413);
    expect(JSON.parse(result.body)).toMatchObject({ error: { code: 'body_too_large' } });
    expect(result.ms).toBeLessThan(2000);
    // It read up to the cap, then answered: what was in flight is socket buffers, not the 100 MB.
    expect(result.sentBeforeAnswer).toBeGreaterThan(maxBodyBytes);
    expect(result.sentBeforeAnswer).toBeLessThan(maxBodyBytes + 24 * MiB);
    expect((await signedPost(origin.url, '/v1/verify', verifyBody)).status).toBe(200);
  });

  it('stops decoding within a token or two when the client of a long /v1/generate disconnects', async () => {
    const servedBefore = queue.stats().served;
    const aborter = new AbortController();
    const text = JSON.stringify({ context: [10, 20, 30, 40, 50], max_tokens: 400, sampling: greedy });
    const response = await signedPost(origin.url, '/v1/generate', text, { signal: aborter.signal });
    expect(response.status).toBe(200);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let received = '';
    while (received.split('\n').length <= 3) received += (await reader.read()).value ?? '';
    expect(JSON.parse(received.split('\n')[0])).toMatchObject({ type: 'token', token: expect.any(Number) });
    const servedAtAbort = queue.stats().served;
    aborter.abort();
    await sleep(300);
    const afterAbort = (await health(origin.url)).queue!.served;
    await sleep(300);
    const later = (await health(origin.url)).queue!.served;
    expect(later).toBe(afterAbort);
    // Measured: 1 pass starts after the abort (the one already running is not counted); 2 leaves room for a slow machine.
    expect(afterAbort - servedAtAbort).toBeLessThanOrEqual(2);
    // Far from the 400 passes the request asked for.
    expect(afterAbort - servedBefore).toBeLessThan(200);
    expect(queue.stats()).toMatchObject({ running: 0, waiting: 0 });
  });

  it('drops a verify still waiting in the forward-pass queue when its client leaves: it costs no forward pass', async () => {
    // Hold the only slot so the verify has to wait.
    let release!: () => void;
    const held = queue.run(() => new Promise<void>((r) => (release = r)));
    const { served, dropped } = queue.stats();
    const aborter = new AbortController();
    const pending = signedPost(origin.url, '/v1/verify', verifyBody, { signal: aborter.signal }).catch((err: Error) => err);
    await waitUntil(() => queue.stats().waiting === 1);
    aborter.abort();
    await waitUntil(() => queue.stats().waiting === 0);
    expect(await pending).toMatchObject({ name: 'AbortError' });
    expect(queue.stats().dropped).toBe(dropped + 1);
    release();
    await held;
    await sleep(50);
    // Only the held pass ran.
    expect(queue.stats().served).toBe(served);
    expect((await signedPost(origin.url, '/v1/verify', verifyBody)).status).toBe(200);
    expect(queue.stats().served).toBe(served + 1);
  });

  it("the edge's client signs with its key id, and stopping its generate early stops the origin", async () => {
    const edge = new HttpOriginClient(origin.url, 10_000, { secret, name: 'hardening' });
    expect((await edge.verify(JSON.parse(verifyBody))).tokens.length).toBeGreaterThan(0);
    const wrongKey = new HttpOriginClient(origin.url, 10_000, { secret, keyId: 'next', name: 'hardening' });
    const refused = wrongKey.verify(JSON.parse(verifyBody));
    await expect(refused).rejects.toMatchObject({ status: 502, code: 'origin_auth_failed' });
    // The edge's wording of the 502 is its own; the origin's code reaches it.
    await expect(refused).rejects.toThrow(/signature_unknown_key|not configured on this origin/);
    const servedBefore = queue.stats().served;
    let tokens = 0;
    for await (const event of edge.generate({ context: [7, 8, 9], max_tokens: 400, sampling: greedy, stop_token_ids: [] })) {
      if (event.type === 'token' && ++tokens === 3) break; // a stop string matched at the edge
    }
    await sleep(300);
    const afterStop = queue.stats().served;
    await sleep(300);
    expect(queue.stats().served).toBe(afterStop);
    expect(afterStop - servedBefore).toBeLessThan(50);
  });
});

describe('origin in-process: the generate stream cancelled by its reader', () => {
  it('stops decoding when the response body is cancelled (no socket involved)', async () => {
    const model = await loadNodeModel(TARGET_DIR);
    const queue = new ForwardQueue(1, 8);
    const app = createOriginApp({ id: 'cancel', modelName: 'edgespec-target', target: new TargetModel(model.lm), queue });
    const response = await app.request('/v1/generate', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ context: [1, 2, 3], max_tokens: 400, sampling: greedy }),
    });
    const reader = response.body!.getReader();
    await reader.read();
    await reader.read();
    const atCancel = queue.stats().served;
    await reader.cancel();
    await sleep(300);
    const afterCancel = queue.stats().served;
    await sleep(300);
    expect(queue.stats().served).toBe(afterCancel);
    expect(afterCancel - atCancel).toBeLessThanOrEqual(2);
  });
});

async function waitUntil(condition: () => boolean, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(5);
  }
}

/** origin/main.ts as a process (env parsing, startup checks, listening on a free port). */
interface OriginProcess {
  url: string;
  child: ChildProcess;
  output: () => string;
  stop(): Promise<void>;
}

function startOriginProcess(env: Record<string, string>): Promise<OriginProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'origin/main.ts', '--port', '0', '--model', TARGET_DIR, '--id', 'rotation'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // Nothing inherited by accident: only the keys this test sets.
    env: { ...process.env, ORIGIN_SECRET: '', ORIGIN_SECRETS: '', ...env },
  });
  let output = '';
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  };
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening on (http:\/\/[\d.]+:\d+)/.exec(output);
      if (match) resolve({ url: match[1], child, output: () => output, stop });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => reject(Object.assign(new Error(`origin exited with code ${code}`), { output, code })));
  });
}

describe('key rotation across an origin restart (origin/main.ts)', () => {
  const oldSecret = 'old-secret-aaaaaaaaaaaaaaaa';
  const newSecret = 'new-secret-bbbbbbbbbbbbbbbb';
  let running: OriginProcess | undefined;
  afterAll(() => running?.stop());

  it('accepts old and new keys during the overlap, and only the new one after restarting without the old', async () => {
    running = await startOriginProcess({ ORIGIN_SECRETS: `old:${oldSecret},new:${newSecret}` });
    expect(running.output()).toMatch(/require signatures by key id old, new/);
    expect(running.output()).not.toContain(oldSecret);
    expect((await signedPost(running.url, '/v1/verify', verifyBody, { keyId: 'old', secret: oldSecret })).status).toBe(200);
    expect((await signedPost(running.url, '/v1/verify', verifyBody, { keyId: 'new', secret: newSecret })).status).toBe(200);
    // A key id carrying the other id's secret is not accepted: each id has its own secret.
    expect((await signedPost(running.url, '/v1/verify', verifyBody, { keyId: 'new', secret: oldSecret })).status).toBe(401);
    const { served } = (await health(running.url)).queue!;
    await running.stop();

    running = await startOriginProcess({ ORIGIN_SECRETS: `new:${newSecret}` });
    const refused = await signedPost(running.url, '/v1/verify', verifyBody, { keyId: 'old', secret: oldSecret });
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ error: { type: 'authentication_error', code: 'signature_unknown_key' } });
    expect((await health(running.url)).queue!.served).toBe(0);
    expect((await signedPost(running.url, '/v1/verify', verifyBody, { keyId: 'new', secret: newSecret })).status).toBe(200);
    expect(served).toBe(2);
  });

  it('ORIGIN_SECRET alone is key id "default", as before key ids', async () => {
    const single = await startOriginProcess({ ORIGIN_SECRET: oldSecret });
    try {
      expect((await signedPost(single.url, '/v1/verify', verifyBody, { secret: oldSecret })).status).toBe(200);
      expect((await signedPost(single.url, '/v1/verify', verifyBody, { keyId: 'old', secret: oldSecret })).status).toBe(401);
    } finally {
      await single.stop();
    }
  });

  it.each([
    ['a secret under 16 characters', 'k1:tooshort-xyz', /ORIGIN_SECRETS entry 1 of 1: the secret of key id "k1" is shorter than 16 characters/, 'tooshort-xyz'],
    ['an entry that is only a secret', `k1:${newSecret},${oldSecret}`, /ORIGIN_SECRETS entry 2 of 2 is not of the form id:secret/, oldSecret],
  ])('refuses to start with %s, saying which entry without printing it', async (_, secrets, message, leaked) => {
    const failure = (await startOriginProcess({ ORIGIN_SECRETS: secrets }).then(
      (started) => started.stop().then(() => null),
      (err: Error & { output: string; code: number }) => err,
    ))!;
    expect(failure).not.toBeNull();
    expect(failure.code).toBe(1);
    expect(failure.output).toMatch(message);
    expect(failure.output).not.toContain(leaked);
  });
});
