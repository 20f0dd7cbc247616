import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { inject } from 'vitest';

/** Small helpers for talking to the edge Worker the globalSetup started. */
export const edgeUrl = () => inject('edgeUrl');
export const originUrl = () => inject('originUrl');
/** The key of the tests' own tenant (no limits). */
export const apiKey = () => inject('apiKey');

/** JSON request headers with the tests' API key (or another key). */
export const authHeaders = (key: string = apiKey()): Record<string, string> => ({ 'content-type': 'application/json', authorization: `Bearer ${key}` });

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Answer {
  status: number;
  /** The JSON body, or null when there is none. */
  json: any;
  headers: Headers;
}

/** An API call with a key (the tests' own by default), a JSON body when given, extra headers, on the shared edge or another one at `base`. */
export async function api(method: string, path: string, body?: unknown, key: string = apiKey(), extra: Record<string, string> = {}, base: string = edgeUrl()): Promise<Answer> {
  const response = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...extra },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, json: await response.json().catch(() => null), headers: response.headers };
}

/** Polls `probe` until it gives something truthy (returned), or fails naming `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 30_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * Rows of a query on the shared edge's local D1, read the way wrangler reads
 * it (`wrangler d1 execute --local`, on the persistence directory
 * test/support/edge-stack.ts gives that edge: `.wrangler/test-state-<port>`):
 * for what is stored but no route shows, such as sealed secrets. The query is
 * a literal: wrangler binds no parameters, so callers put only ids they
 * checked into it.
 */
export async function queryLocalD1<T = Record<string, unknown>>(sql: string): Promise<T[]> {
  const persistTo = `.wrangler/test-state-${new URL(edgeUrl()).port}`;
  const args = ['node_modules/wrangler/bin/wrangler.js', 'd1', 'execute', 'DB', '--local', '--env', 'test', '--persist-to', persistTo, '--json', '--command', sql];
  const run = () => promisify(execFile)(process.execPath, args, { env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: '1' }, maxBuffer: 16 * 2 ** 20 });
  // The running edge writes the same SQLite file (jobs, usage, rate limits),
  // so this second reader can meet its write lock (SQLITE_BUSY): wait and read again.
  let stdout = '';
  for (let attempt = 1; ; attempt++) {
    try {
      ({ stdout } = await run());
      break;
    } catch (error) {
      const busy = /SQLITE_BUSY|database is locked/.test(String((error as { stderr?: string }).stderr ?? '') + String((error as { stdout?: string }).stdout ?? '') + String(error));
      if (!busy || attempt >= 8) throw error;
      await sleep(250 * attempt);
    }
  }
  // `--json` prints one array of statement results; anything wrangler prints around it is not ours.
  const results = JSON.parse(stdout.slice(stdout.indexOf('['), stdout.lastIndexOf(']') + 1)) as Array<{ results: T[] }>;
  return results.flatMap((r) => r.results);
}

/** An admin API call on the shared edge. */
export async function admin(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const response = await fetch(`${edgeUrl()}${path}`, {
    method,
    headers: { authorization: `Bearer ${inject('adminSecret')}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, json: await response.json() };
}

/** A new tenant with these limits (snake_case, as the admin API takes them) and a key for it. */
export async function createTenantKey(limits: Record<string, number | null> = {}): Promise<{ tenantId: string; keyId: string; key: string }> {
  const tenant = await admin('POST', '/admin/tenants', { name: `t-${crypto.randomUUID().slice(0, 8)}`, limits });
  if (tenant.status !== 201) throw new Error(`creating a tenant failed: ${JSON.stringify(tenant.json)}`);
  const key = await admin('POST', '/admin/keys', { tenant: tenant.json.id });
  if (key.status !== 201) throw new Error(`creating a key failed: ${JSON.stringify(key.json)}`);
  return { tenantId: tenant.json.id, keyId: key.json.id, key: key.json.key };
}

export interface CompletionBody {
  id: string;
  object: string;
  model: string;
  choices: Array<{ text: string; index: number; finish_reason: string | null; token_ids?: number[]; prompt_token_ids?: number[] }>;
  usage: {
    prompt_tokens: number;
    completion_tokens: number;
    total_tokens: number;
    prompt_tokens_details: { cached_tokens: number };
    completion_tokens_details: { accepted_prediction_tokens: number; rejected_prediction_tokens: number };
  };
  speculation: {
    mode: string;
    rounds: number;
    drafted: number;
    accepted: number;
    mean_accepted_length: number | null;
    draft_ms: number;
    verify_ms: number;
    origin: string | null;
  };
}

export async function complete(body: Record<string, unknown>, key: string = apiKey()): Promise<{ status: number; json: any; headers: Headers }> {
  const response = await fetch(`${edgeUrl()}/v1/completions`, {
    method: 'POST',
    headers: authHeaders(key),
    body: JSON.stringify(body),
  });
  return { status: response.status, json: await response.json(), headers: response.headers };
}

/** Parse an SSE body into its data payloads. */
export function sseData(text: string): string[] {
  return text
    .split('\n\n')
    .map((event) => event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n'))
    .filter(Boolean);
}

/** Origin-only greedy decoding straight from the origin: the reference output. */
export async function originGreedy(context: number[], maxTokens: number, stopTokenIds: number[] = []): Promise<number[]> {
  const response = await fetch(`${originUrl()}/v1/generate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ context, max_tokens: maxTokens, sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 }, stop_token_ids: stopTokenIds }),
  });
  if (!response.ok) throw new Error(`origin generate failed: ${response.status} ${await response.text()}`);
  return (await response.text())
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .flatMap((e) => (e.type === 'token' ? [e.token as number] : []));
}
