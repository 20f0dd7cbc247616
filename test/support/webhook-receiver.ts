import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Webhook } from 'standardwebhooks';

/**
 * A webhook receiver: a real node:http server in its own process that
 * verifies every request with the `standardwebhooks` library (and svix's
 * `Webhook.verify` when svix loads), records it, and answers the way its
 * path is told to: always 2xx, always 5xx, 410, 429 with Retry-After, or
 * "flaky" (a share of 5xx, hangs past the sender's timeout and dropped
 * connections).
 *
 * Tests: `startReceiver(port)` spawns it (port 0: any free port, read back
 * from what it prints); `configure(name, behaviour)` sets how POST
 * /hooks/<name> answers and which secrets verify it; `received(name)` reads
 * what arrived. The job benchmark (bench/jobs.ts) uses it the same way.
 *
 * To try webhooks by hand (README: Jobs and webhooks):
 *   npx tsx test/support/webhook-receiver.ts --port 9000 --secret whsec_…
 * prints every event that arrives on any path and whether it verified.
 */
export interface Behaviour {
  secrets: string[];
  mode: 'ok' | 'fail' | 'gone' | 'retry-after' | 'flaky' | 'redirect';
  /** flaky: share of requests that fail (a third each: 5xx, hang, dropped connection). */
  failRate?: number;
  /** How long a flaky hang lasts before a (too late) 200; longer than the sender's timeout. */
  hangMs?: number;
  /** retry-after: the Retry-After seconds of the 429s, for the first `failures` requests, then 200. */
  retryAfter?: number;
  failures?: number;
  /** Pad error answers to this many bytes (the sender keeps only the first KiB). */
  bodyBytes?: number;
}

export interface Received {
  at: number;
  path: string;
  id: string | null;
  timestamp: string | null;
  signature: string | null;
  attempt: string | null;
  body: string;
  /** Per configured secret (same order): does it verify with standardwebhooks? */
  verified: boolean[];
  /** The same with svix's Webhook.verify (null: svix did not load). */
  svixVerified: boolean[] | null;
  /** What the receiver did: an HTTP status, "hang" (answered late) or "drop" (closed the connection). */
  answer: number | 'hang' | 'drop';
}

type SvixWebhook = { verify(payload: string, headers: Record<string, string>): unknown };
let svixWebhook: (new (secret: string) => SvixWebhook) | null = null;

function verifyWith(make: (secret: string) => { verify(payload: string, headers: Record<string, string>): unknown }, secrets: string[], body: string, headers: Record<string, string>): boolean[] {
  return secrets.map((secret) => {
    try {
      make(secret).verify(body, headers);
      return true;
    } catch {
      return false;
    }
  });
}

async function serve(port: number, defaults: Behaviour, print: boolean): Promise<void> {
  try {
    svixWebhook = ((await import('svix')) as unknown as { Webhook: new (secret: string) => SvixWebhook }).Webhook;
  } catch {
    svixWebhook = null;
  }
  const behaviours = new Map<string, Behaviour>();
  const records = new Map<string, Received[]>();
  const counts = new Map<string, number>();

  const server = createServer(async (req, res) => {
    const body = await readBody(req);
    const path = (req.url ?? '/').split('?')[0];
    const control = /^\/__(config|received)\/([\w.-]+)$/.exec(path);
    if (control) {
      if (control[1] === 'config' && req.method === 'POST') {
        behaviours.set(control[2], JSON.parse(body) as Behaviour);
        return json(res, 200, { ok: true });
      }
      return json(res, 200, records.get(control[2]) ?? []);
    }
    if (req.method !== 'POST') return json(res, 404, { error: 'POST webhooks here' });
    const name = /^\/hooks\/([\w.-]+)$/.exec(path)?.[1] ?? 'default';
    const behaviour = behaviours.get(name) ?? defaults;
    const headers = {
      'webhook-id': header(req, 'webhook-id') ?? '',
      'webhook-timestamp': header(req, 'webhook-timestamp') ?? '',
      'webhook-signature': header(req, 'webhook-signature') ?? '',
    };
    const verified = verifyWith((s) => new Webhook(s), behaviour.secrets, body, headers);
    const svixVerified = svixWebhook ? verifyWith((s) => new svixWebhook!(s), behaviour.secrets, body, headers) : null;
    const count = (counts.get(name) ?? 0) + 1;
    counts.set(name, count);
    const answer = choose(behaviour, count);
    const record: Received = { at: Date.now(), path, id: header(req, 'webhook-id'), timestamp: header(req, 'webhook-timestamp'), signature: header(req, 'webhook-signature'), attempt: header(req, 'webhook-attempt'), body, verified, svixVerified, answer };
    records.set(name, [...(records.get(name) ?? []), record]);
    if (print) {
      let type = '?';
      try {
        type = (JSON.parse(body) as { type?: string }).type ?? '?';
      } catch {
        /* not JSON */
      }
      console.log(`${new Date().toISOString()} ${path} ${type} webhook-id=${record.id} ${verified.some(Boolean) ? 'verified' : 'NOT VERIFIED'}\n${body}\n`);
    }
    if (answer === 'drop') return void req.socket.destroy();
    if (answer === 'hang') {
      await new Promise((r) => setTimeout(r, behaviour.hangMs ?? 5_000));
      if (!res.destroyed) json(res, 200, { ok: true, late: true });
      return;
    }
    if (answer === 429) res.setHeader('retry-after', String(behaviour.retryAfter ?? 1));
    // A redirect to the cloud metadata address: a sender that followed it would be an SSRF.
    if (answer === 302) res.setHeader('location', 'http://169.254.169.254/latest/meta-data/');
    json(res, answer, answer < 300 ? { ok: true } : { error: `receiver mode ${behaviour.mode}`, ...(behaviour.bodyBytes ? { pad: 'é'.repeat(behaviour.bodyBytes / 2) } : {}) });
  });
  server.keepAliveTimeout = 1_000;
  server.listen(port, '127.0.0.1', () => console.log(`[webhook-receiver] listening on http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function choose(behaviour: Behaviour, count: number): Received['answer'] {
  switch (behaviour.mode) {
    case 'ok':
      return 200;
    case 'fail':
      return 500;
    case 'gone':
      return 410;
    case 'redirect':
      return 302;
    case 'retry-after':
      return count <= (behaviour.failures ?? 1) ? 429 : 200;
    case 'flaky': {
      const r = Math.random();
      const rate = behaviour.failRate ?? 0.3;
      if (r < rate / 3) return Math.random() < 0.5 ? 500 : 503;
      if (r < (2 * rate) / 3) return 'hang';
      if (r < rate) return 'drop';
      return 200;
    }
  }
}

const header = (req: IncomingMessage, name: string) => {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(', ') : (value ?? null);
};

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((done, fail) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (text += chunk));
    req.on('end', () => done(text));
    req.on('error', fail);
  });
}

function json(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** The Standard Webhooks payload of a record. */
export const eventOf = (record: Received) => JSON.parse(record.body) as { type: string; timestamp: string; data: any };

/** The records of one job's events (of one type). */
export const recordsFor = (records: Received[], jobId: string, type?: string) => records.filter((r) => eventOf(r).data.id === jobId && (!type || eventOf(r).type === type));

/** A receiver process for tests. */
export interface Receiver {
  url: string;
  hook(name: string): string;
  configure(name: string, behaviour: Behaviour): Promise<void>;
  received(name: string): Promise<Received[]>;
  stop(): Promise<void>;
}

/** Spawns a receiver on `port` (0: a free port the system picks) and waits until it answers. */
export async function startReceiver(port: number): Promise<Receiver> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--port', String(port), '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  const deadline = Date.now() + 20_000;
  let url = '';
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the webhook receiver exited:\n${output}`);
    // Its address is what it says it listens on (the port it was given, or the one it got).
    url ||= /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1] ?? '';
    try {
      if (url && (await fetch(`${url}/__received/none`)).ok) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`the webhook receiver did not start:\n${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    hook: (name) => `${url}/hooks/${name}`,
    async configure(name, behaviour) {
      const response = await fetch(`${url}/__config/${name}`, { method: 'POST', body: JSON.stringify(behaviour) });
      if (!response.ok) throw new Error(`configuring the receiver failed: ${response.status}`);
    },
    async received(name) {
      return (await (await fetch(`${url}/__received/${name}`)).json()) as Received[];
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}

// Run as a script (the tests spawn it; README shows it by hand).
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { port: { type: 'string', default: '9000' }, secret: { type: 'string', multiple: true, default: [] }, quiet: { type: 'boolean', default: false } } });
  void serve(Number(values.port), { secrets: values.secret as string[], mode: 'ok' }, !values.quiet);
}
