/**
 * A "broken origin" for tests: a tiny node:http server that answers GET /health
 * exactly as the real reference origin does (it copies the real origin's reply,
 * with its own id), but /v1/verify and /v1/generate with garbage of one of
 * several kinds. The edge must treat every such reply as that origin's failure
 * (fail over, count it on the breaker) and never let any of it reach a client.
 *
 *   BROKEN_ORIGIN_PORT      port on 127.0.0.1 (required)
 *   BROKEN_ORIGIN_UPSTREAM  the real origin: /health is copied from it, "proxy-then-*" streams relay its tokens (required)
 *   BROKEN_ORIGIN_ID        id in /health (default "broken")
 *   BROKEN_ORIGIN_MODE      initial kinds: "cycle" (default: a different kind per call, in order) or
 *                           "verify=<kind>,generate=<kind>"
 *
 * Control (for the test, not the edge): POST /__control {"verify"?: kind | "cycle", "generate"?: kind | "cycle"}
 * sets the kinds; GET /__stats answers how many calls each kind served.
 * Every garbage body carries GARBAGE_MARKER and LEAK_URL, so a test can assert neither ever reaches a client.
 *
 * Run: node --import tsx test/support/broken-origin.ts
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const GARBAGE_MARKER = 'GARBAGE-5eb1a9';
export const LEAK_URL = 'http://leak.invalid:6666/internal/secret';
const garbageText = `${GARBAGE_MARKER} stack trace at ${LEAK_URL}`;

export const VERIFY_KINDS = [
  'not-json',
  'truncated-json',
  'empty',
  'wrong-shape',
  'accepted-too-many',
  'token-out-of-vocab',
  'tokens-not-draft',
  'status-500-text',
  'status-500-openai',
  'status-503',
  'status-401',
  'connection-reset',
  'huge',
] as const;
export const GENERATE_KINDS = [
  'not-ndjson',
  'garbage-line',
  'token-out-of-vocab',
  'status-500-text',
  'long-line',
  'proxy-then-garbage',
  'proxy-then-error-event',
  'proxy-then-eof',
  'proxy-then-bad-done',
] as const;
/** Generate kinds that fail before the first token (the rest relay two real tokens first). */
export const GENERATE_KINDS_BEFORE_FIRST_TOKEN = GENERATE_KINDS.filter((k) => !k.startsWith('proxy-'));
export type VerifyKind = (typeof VERIFY_KINDS)[number];
export type GenerateKind = (typeof GENERATE_KINDS)[number];

interface Health {
  vocab_size: number;
  [key: string]: unknown;
}

const RELAYED_TOKENS = 2;

function main() {
  const port = Number(process.env.BROKEN_ORIGIN_PORT);
  const upstream = process.env.BROKEN_ORIGIN_UPSTREAM?.replace(/\/+$/, '');
  const id = process.env.BROKEN_ORIGIN_ID ?? 'broken';
  if (!port || !upstream) throw new Error('BROKEN_ORIGIN_PORT and BROKEN_ORIGIN_UPSTREAM are required');

  const modes: { verify: VerifyKind | 'cycle'; generate: GenerateKind | 'cycle' } = { verify: 'cycle', generate: 'cycle' };
  for (const part of (process.env.BROKEN_ORIGIN_MODE ?? 'cycle').split(',')) {
    const [route, kind] = part.split('=');
    if (route === 'verify' && kind) modes.verify = kind as VerifyKind;
    if (route === 'generate' && kind) modes.generate = kind as GenerateKind;
  }
  const served: { verify: Record<string, number>; generate: Record<string, number> } = { verify: {}, generate: {} };
  const cursor = { verify: 0, generate: 0 };
  const next = <K extends string>(route: 'verify' | 'generate', kinds: readonly K[], mode: K | 'cycle'): K => {
    const kind = mode === 'cycle' ? kinds[cursor[route]++ % kinds.length] : mode;
    served[route][kind] = (served[route][kind] ?? 0) + 1;
    return kind;
  };

  let health: Health | null = null;
  const upstreamHealth = async (): Promise<Health> => {
    try {
      const response = await fetch(`${upstream}/health`, { signal: AbortSignal.timeout(2000) });
      if (response.ok) health = { ...((await response.json()) as Health), id };
    } catch {
      /* keep the last copy */
    }
    if (!health) throw new Error('the upstream origin has not answered /health yet');
    return health;
  };

  const server = createServer(async (req, res) => {
    try {
      const body = await readBody(req);
      const path = (req.url ?? '/').split('?')[0];
      if (req.method === 'GET' && path === '/health') return json(res, 200, await upstreamHealth());
      if (req.method === 'GET' && path === '/__stats') return json(res, 200, { modes, served });
      if (req.method === 'POST' && path === '/__control') {
        const change = JSON.parse(body) as Partial<typeof modes>;
        Object.assign(modes, change);
        return json(res, 200, { modes });
      }
      const vocab = (await upstreamHealth()).vocab_size;
      if (req.method === 'POST' && path === '/v1/verify') return verify(next('verify', VERIFY_KINDS, modes.verify), JSON.parse(body), vocab, res);
      if (req.method === 'POST' && path === '/v1/generate') return await generate(next('generate', GENERATE_KINDS, modes.generate), body, vocab, upstream, res);
      json(res, 404, { error: { message: `no route ${req.method} ${path}`, type: 'not_found_error', param: null, code: null } });
    } catch (err) {
      console.error('[broken-origin]', err);
      if (!res.headersSent) json(res, 500, { error: { message: 'broken origin bug', type: 'server_error', param: null, code: null } });
      else res.destroy();
    }
  });
  server.listen(port, '127.0.0.1', () => console.log(`[broken-origin] listening on http://127.0.0.1:${port}, upstream ${upstream}`));
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function verify(kind: VerifyKind, request: { draft: Array<{ token: number }> }, vocab: number, res: ServerResponse) {
  const drafted = request.draft.map((d) => d.token);
  const stats = { id: GARBAGE_MARKER, forward_ms: 1, cached_tokens: 0 };
  switch (kind) {
    case 'not-json':
      return raw(res, 200, 'text/html', `<html><body>${garbageText}</body></html>`);
    case 'truncated-json':
      return raw(res, 200, 'application/json', `{"accepted": 0, "tokens": [1, "${GARBAGE_MARKER}`);
    case 'empty':
      return raw(res, 200, 'application/json', '');
    case 'wrong-shape':
      return json(res, 200, { accepted: GARBAGE_MARKER, tokens: LEAK_URL, origin: stats });
    case 'accepted-too-many':
      return json(res, 200, { accepted: drafted.length + 1, tokens: [...drafted, 1, 2], origin: stats });
    case 'token-out-of-vocab':
      return json(res, 200, { accepted: 0, tokens: [vocab + 5], origin: stats });
    case 'tokens-not-draft':
      // Claims to accept every draft but returns other tokens (with no draft: more tokens than accepted + 1).
      return json(res, 200, drafted.length ? { accepted: drafted.length, tokens: [...drafted.map((t) => (t + 1) % vocab), 0], origin: stats } : { accepted: 0, tokens: [0, 0], origin: stats });
    case 'status-500-text':
      return raw(res, 500, 'text/plain', garbageText);
    case 'status-500-openai':
      return json(res, 500, { error: { message: garbageText, type: 'server_error', param: null, code: GARBAGE_MARKER } });
    case 'status-503':
      res.setHeader('retry-after', '1');
      return json(res, 503, { error: { message: garbageText, type: 'service_unavailable', param: null, code: 'origin_overloaded' } });
    case 'status-401':
      return json(res, 401, { error: { message: garbageText, type: 'authentication_error', param: null, code: 'signature_invalid' } });
    case 'connection-reset':
      return void res.socket?.destroy();
    case 'huge':
      return raw(res, 200, 'application/json', `{"accepted": 0, "tokens": [0], "pad": "${garbageText.repeat(40_000)}"}`);
  }
}

async function generate(kind: GenerateKind, body: string, vocab: number, upstream: string, res: ServerResponse) {
  const line = (event: unknown) => JSON.stringify(event) + '\n';
  switch (kind) {
    case 'not-ndjson':
      return raw(res, 200, 'text/html', `<html><body>${garbageText}</body></html>`);
    case 'garbage-line':
      return raw(res, 200, 'application/x-ndjson', `${garbageText}\n`);
    case 'token-out-of-vocab':
      return raw(res, 200, 'application/x-ndjson', line({ type: 'token', token: vocab + 5, forward_ms: 1 }) + line({ type: 'done', finish_reason: 'length', origin: { id: GARBAGE_MARKER, forward_ms: 1, cached_tokens: 0 } }));
    case 'status-500-text':
      return raw(res, 500, 'text/plain', garbageText);
    case 'long-line':
      return raw(res, 200, 'application/x-ndjson', `{"type": "token", "pad": "${garbageText.repeat(5_000)}"}\n`);
  }
  // proxy-then-*: relay the real origin's first tokens, then break in the chosen way.
  const tail = {
    'proxy-then-garbage': `${garbageText}\n`,
    'proxy-then-error-event': line({ type: 'error', message: garbageText }),
    'proxy-then-eof': '',
    'proxy-then-bad-done': line({ type: 'done', finish_reason: GARBAGE_MARKER, origin: { id: LEAK_URL } }),
  }[kind];
  const response = await fetch(`${upstream}/v1/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  if (!response.ok || !response.body) return raw(res, 500, 'text/plain', garbageText);
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  let relayed = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += value;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const text = buffered.slice(0, newline + 1);
        buffered = buffered.slice(newline + 1);
        const event = JSON.parse(text) as { type: string };
        // A short generation may finish before the break: then it is relayed whole, as a good origin would.
        res.write(text);
        if (event.type === 'done') return void res.end();
        if (event.type === 'token' && ++relayed === RELAYED_TOKENS) return void res.end(tail);
      }
    }
    res.end();
  } finally {
    reader.cancel().catch(() => {});
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (text += chunk));
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
}

function raw(res: ServerResponse, status: number, contentType: string, body: string) {
  res.writeHead(status, { 'content-type': contentType });
  res.end(body);
}

function json(res: ServerResponse, status: number, body: unknown) {
  raw(res, status, 'application/json', JSON.stringify(body));
}

// Started as a script, not imported (the test imports the kinds and markers).
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
