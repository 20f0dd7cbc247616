import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { seedModels } from './seed-models';

/**
 * The local stack: a reference origin (Node, onnxruntime-node) and the edge
 * Worker under `wrangler dev` (workerd), wired together. `npm start`, the
 * tests and the benchmarks all start it through here, so they run the same thing.
 */
export interface Service {
  url: string;
  process: ChildProcess;
  stop(): Promise<void>;
  /** Recent output, for failure messages. */
  output(): string;
}

interface ProcessOptions {
  log?: (line: string) => void;
  /** Forward the process output to this terminal (npm start) instead of only keeping it for error messages. */
  inheritOutput?: boolean;
}

export interface OriginOptions extends ProcessOptions {
  port: number;
  /** Target model folder. */
  targetDir?: string;
  id?: string;
  threads?: number;
  /** Extra origin flags, e.g. ['--cost-model', 'h100-llama-3.1-8b'] (benchmarks). */
  args?: string[];
  /** Shared secret (ORIGIN_SECRET): the origin then refuses unsigned verify/generate. Unset = unsigned. */
  secret?: string;
  /** A draft model folder the origin speculates with next to the target (`--draft`; speculation.placement "origin"). */
  originDraftDir?: string;
}

export interface EdgeOptions extends ProcessOptions {
  port: number;
  originUrl: string;
  /** Draft model folder, seeded into the local R2 bucket. */
  draftDir?: string;
  /** Extra wrangler vars, e.g. { DRAFT_LENGTH: '6' }. */
  vars?: Record<string, string>;
  /** Where wrangler keeps local R2/DO state. */
  persistTo?: string;
  /** ORIGIN_SECRET for signing origin calls (a wrangler secret in production; a --var locally). */
  secret?: string;
  /**
   * Which Worker: "test" (default) is functions/testing/entry.ts, the app plus
   * the /internal/* routes tests and benchmarks use; "production" is the
   * deployed entry, functions/index.ts (`npm start`).
   */
  worker?: 'test' | 'production';
  /** ADMIN_SECRET of the admin API; a fresh random one when unset. */
  adminSecret?: string;
  /**
   * A tenant to create once the edge is up, whose new key the service
   * returns as `apiKey` (no limits unless given); false = none.
   */
  tenant?: { name?: string; limits?: Record<string, number | null> } | false;
}

/** A running edge and the credentials to use it. */
export interface EdgeService extends Service {
  adminSecret: string;
  /** The key of the tenant created at start (options.tenant), else ''. */
  apiKey: string;
  /** A new tenant with these limits, and a key for it (admin API). */
  createTenantKey(limits?: Record<string, number | null>, name?: string): Promise<{ tenantId: string; keyId: string; key: string }>;
  /** An admin API call with the admin secret. */
  admin(method: string, path: string, body?: unknown): Promise<any>;
}

export async function startOrigin(options: OriginOptions): Promise<Service> {
  const targetDir = options.targetDir ?? 'models/edgespec-target';
  const url = `http://127.0.0.1:${options.port}`;
  options.log?.(`starting origin on ${url} (${targetDir})`);
  const args = ['--import', 'tsx', 'origin/main.ts', '--port', String(options.port), '--model', targetDir, '--threads', String(options.threads ?? 1)];
  if (options.id) args.push('--id', options.id);
  if (options.originDraftDir) args.push('--draft', options.originDraftDir);
  if (options.args) args.push(...options.args);
  // The secret travels in the environment, never argv; an ORIGIN_SECRET of the parent is not inherited by accident.
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ORIGIN_SECRET: options.secret ?? '', ORIGIN_SECRETS: '' } });
  return await supervise(child, `${url}/health`, url, '[origin]', 60_000, options);
}

const wranglerEnv = { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false', CI: '1' };

/** `wrangler d1 migrations apply DB --local` on the persistence directory `wrangler dev` will use. */
export async function applyMigrations(persistTo: string, worker: 'test' | 'production', log?: (line: string) => void): Promise<void> {
  const args = ['node_modules/wrangler/bin/wrangler.js', 'd1', 'migrations', 'apply', 'DB', '--local', '--persist-to', persistTo];
  if (worker === 'test') args.push('--env', 'test');
  try {
    const { stdout } = await promisify(execFile)(process.execPath, args, { env: wranglerEnv });
    const applied = stdout.split('\n').filter((l) => /\.sql\b.*✅|✅.*\.sql/.test(l)).length;
    log?.(applied ? `applied ${applied} D1 migration(s) to the local database` : 'local D1 database is up to date');
  } catch (err) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string };
    throw new Error(`wrangler d1 migrations apply failed:\n${stdout ?? ''}${stderr ?? ''}`);
  }
}

export async function startEdge(options: EdgeOptions): Promise<EdgeService> {
  const draftDir = options.draftDir ?? 'models/edgespec-draft';
  const persistTo = options.persistTo ?? '.wrangler/state';
  const worker = options.worker ?? 'test';
  const url = `http://127.0.0.1:${options.port}`;
  await seedModels({ persistTo, modelDirs: [draftDir], log: options.log });
  await applyMigrations(persistTo, worker, options.log);
  const draftName = draftDir.split(/[\\/]/).filter(Boolean).pop()!;
  const adminSecret = options.adminSecret ?? randomBytes(24).toString('hex');
  // A local stack is development: webhooks may go to a receiver on loopback over plain http (production default: off).
  const vars: Record<string, string> = { ORIGIN_URL: options.originUrl, DRAFT_MODEL: draftName, WEBHOOK_ALLOW_HTTP_LOOPBACK: 'on', ...options.vars };
  // Secrets go to wrangler in an env file (the local stand-in for `wrangler secret put`), never in argv, where `ps` shows them.
  const secretsFile = join(persistTo, 'edge-secrets.env');
  await mkdir(persistTo, { recursive: true });
  const secrets = { ADMIN_SECRET: adminSecret, ...(options.secret ? { ORIGIN_SECRET: options.secret } : {}) };
  await writeFile(secretsFile, Object.entries(secrets).map(([k, v]) => `${k}=${v}\n`).join(''), { mode: 0o600 });
  options.log?.(`starting edge (wrangler dev, workerd) on ${url}`);
  const child = spawn(
    process.execPath,
    [
      'node_modules/wrangler/bin/wrangler.js', 'dev',
      '--ip', '127.0.0.1', '--port', String(options.port),
      '--persist-to', persistTo,
      '--inspector-port', '0',
      '--show-interactive-dev-session=false',
      ...(worker === 'test' ? ['--env', 'test'] : []),
      '--env-file', secretsFile,
      ...Object.entries(vars).flatMap(([k, v]) => ['--var', `${k}:${v}`]),
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      // Local only: no metrics, no fetch of a real Request.cf object (the placeholder is fine here).
      env: { ...wranglerEnv, WRANGLER_LOG: process.env.WRANGLER_LOG ?? 'warn' },
    },
  );
  const service = await supervise(child, `${url}/health`, url, '[edge]', 120_000, options);
  const { admin, createTenantKey } = adminApi(url, adminSecret);
  let apiKey = '';
  if (options.tenant !== false) {
    try {
      apiKey = (await createTenantKey(options.tenant?.limits, options.tenant?.name)).key;
    } catch (err) {
      await service.stop();
      throw err;
    }
  }
  return { ...service, adminSecret, apiKey, admin, createTenantKey };
}

/** The admin API of an edge (functions/routes/admin.ts), for scripts and tests. */
export function adminApi(url: string, adminSecret: string): Pick<EdgeService, 'admin' | 'createTenantKey'> {
  const admin = async (method: string, path: string, body?: unknown): Promise<any> => {
    const response = await fetch(url + path, {
      method,
      headers: { authorization: `Bearer ${adminSecret}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await response.json().catch(() => null);
    if (!response.ok) throw new Error(`admin ${method} ${path} answered ${response.status}: ${JSON.stringify(json)}`);
    return json;
  };
  const createTenantKey = async (limits: Record<string, number | null> = {}, name = `tenant-${randomBytes(4).toString('hex')}`) => {
    const tenant = await admin('POST', '/admin/tenants', { name, limits });
    const key = await admin('POST', '/admin/keys', { tenant: tenant.id, name: 'default' });
    return { tenantId: tenant.id as string, keyId: key.id as string, key: key.key as string };
  };
  return { admin, createTenantKey };
}

export interface Stack {
  originUrl: string;
  edgeUrl: string;
  origin: Service;
  edge: EdgeService;
  stop(): Promise<void>;
}

export async function startStack(options: { originPort: number; edgePort: number } & Omit<OriginOptions, 'port'> & Omit<EdgeOptions, 'port' | 'originUrl'>): Promise<Stack> {
  // The local origin hosts the same draft as the edge, so every placement works out of the box.
  const origin = await startOrigin({ originDraftDir: options.draftDir ?? 'models/edgespec-draft', ...options, port: options.originPort });
  const edge = await startEdge({ ...options, port: options.edgePort, originUrl: origin.url }).catch(async (err) => {
    await origin.stop();
    throw err;
  });
  return {
    originUrl: origin.url,
    edgeUrl: edge.url,
    origin,
    edge,
    async stop() {
      await edge.stop();
      await origin.stop();
    },
  };
}

/** Waits for a started process to answer `healthUrl`; keeps its recent output for error messages. */
export async function supervise(child: ChildProcess, healthUrl: string, url: string, tag: string, timeoutMs: number, options: ProcessOptions): Promise<Service> {
  const recent: string[] = [];
  const capture = (chunk: Buffer) => {
    const text = chunk.toString();
    if (options.inheritOutput) process.stdout.write(text.replace(/^(?=.)/gm, `${tag} `));
    recent.push(...text.split('\n').map((l) => `${tag} ${l}`));
    if (recent.length > 200) recent.splice(0, recent.length - 200);
  };
  child.stdout!.on('data', capture);
  child.stderr!.on('data', capture);
  const output = () => recent.join('\n');
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await waitFor(healthUrl, child, timeoutMs, output);
  } catch (err) {
    await stop();
    throw err;
  }
  options.log?.(`${tag.slice(1, -1)} is up at ${url}`);
  return { url, process: child, stop, output };
}

async function waitFor(url: string, child: ChildProcess, timeoutMs: number, output: () => string) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`process for ${url} exited with code ${child.exitCode}:\n${output()}`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (response.ok) return;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${url} did not come up within ${timeoutMs / 1000} s:\n${output()}`);
}
