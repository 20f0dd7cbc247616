import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { readWranglerConfig } from '../../scripts/wrangler-config';
import { seedModels } from '../../scripts/seed-models';
import { adminApi, applyMigrations, supervise } from '../../scripts/stack';

/**
 * Two edge Workers in two `wrangler dev` processes (two workerd processes, so
 * two isolates that share no memory) that share Durable Object namespaces
 * (RateLimiter by default; `shared` names the bindings) and one local D1 database:
 *
 *   - edge A is the test Worker (wrangler.toml `--env test`, read through
 *     wrangler's own config reader, so bindings, flags and rules are the
 *     file's) under a unique name; it hosts the shared classes;
 *   - edge B is the same Worker under another unique name whose shared
 *     bindings have `script_name` = A's name: it hosts none of those classes
 *     itself, wrangler's dev registry proxies its calls to A's objects (a
 *     Durable Object's local storage is named by its Worker and class, so
 *     only this makes one namespace, as in a deployment);
 *   - both use the same --persist-to directory: the same D1 file (tenants
 *     and keys) and the same R2 bucket (the draft model).
 *
 * The dev registry is a directory in which every `wrangler dev` session
 * announces its Workers by name. Both processes get a private one
 * (WRANGLER_REGISTRY_PATH), and the names are random, so a parallel test run
 * or `npm start` (all named "edgespec-test" in the default registry) can
 * never be the Worker B's binding reaches.
 */
export interface IsolateEdge {
  name: string;
  url: string;
  process: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

export interface IsolatePair {
  a: IsolateEdge;
  b: IsolateEdge;
  adminSecret: string;
  /** An admin API call on edge A (both edges share the database). */
  admin(method: string, path: string, body?: unknown): Promise<any>;
  createTenantKey(limits: Record<string, number | null>): Promise<{ tenantId: string; keyId: string; key: string }>;
  stop(): Promise<void>;
}

export interface IsolatePairOptions {
  ports: [number, number];
  originUrl: string;
  persistTo: string;
  draftDir: string;
  /**
   * Durable Object bindings B reaches on A (default ['RATE_LIMITER']); [] is
   * the negative control: B hosts its own, and the cross-isolate tests must
   * tell the difference.
   */
  shared?: string[];
  log?: (line: string) => void;
}

const wranglerEnv = { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false', CI: '1' };

/** wrangler.toml's test Worker, as wrangler reads it, as a JSON config of its own under `name`; `host`: the Worker whose objects the `shared` bindings use. */
function testWorkerConfig(name: string, host?: string, shared: readonly string[] = []): Record<string, unknown> {
  const config = readWranglerConfig('wrangler.toml', 'test') as unknown as {
    main: string;
    compatibility_date: string;
    compatibility_flags: string[];
    rules: unknown[];
    vars: Record<string, unknown>;
    r2_buckets: unknown[];
    d1_databases: Array<{ binding: string; database_name: string; database_id: string }>;
    durable_objects: { bindings: Array<{ name: string; class_name: string }> };
    migrations: Array<{ tag: string; new_sqlite_classes?: string[] }>;
  };
  const isShared = (binding: string) => host !== undefined && shared.includes(binding);
  const bindings = config.durable_objects.bindings.map(({ name: binding, class_name }) => ({ name: binding, class_name, ...(isShared(binding) ? { script_name: host } : {}) }));
  const hosted = new Set(config.durable_objects.bindings.filter((b) => isShared(b.name)).map((b) => b.class_name));
  // The Worker that does not host a class declares no migration for it.
  const migrations = hosted.size
    ? config.migrations.map((m) => ({ ...m, new_sqlite_classes: (m.new_sqlite_classes ?? []).filter((c) => !hosted.has(c)) })).filter((m) => m.new_sqlite_classes.length)
    : config.migrations;
  return {
    name,
    main: resolve(config.main),
    compatibility_date: config.compatibility_date,
    compatibility_flags: config.compatibility_flags,
    rules: config.rules,
    vars: config.vars,
    r2_buckets: config.r2_buckets,
    d1_databases: config.d1_databases.map(({ binding, database_name, database_id }) => ({ binding, database_name, database_id })),
    durable_objects: { bindings },
    migrations,
  };
}

export async function startIsolatePair(options: IsolatePairOptions): Promise<IsolatePair> {
  const { persistTo } = options;
  await seedModels({ persistTo, modelDirs: [options.draftDir], log: options.log });
  await applyMigrations(persistTo, 'test', options.log);
  const work = await mkdtemp(join(tmpdir(), 'edgespec-isolates-'));
  const registry = join(work, 'registry');
  await mkdir(registry);
  const suffix = randomBytes(4).toString('hex');
  const names = { a: `edgespec-auth-a-${suffix}`, b: `edgespec-auth-b-${suffix}` };
  const adminSecret = randomBytes(24).toString('hex');
  const secretsFile = join(work, 'secrets.env');
  await writeFile(secretsFile, `ADMIN_SECRET=${adminSecret}\n`, { mode: 0o600 });
  const configA = join(work, 'a.wrangler.json');
  const configB = join(work, 'b.wrangler.json');
  await writeFile(configA, JSON.stringify(testWorkerConfig(names.a), null, 2));
  await writeFile(configB, JSON.stringify(testWorkerConfig(names.b, names.a, options.shared ?? ['RATE_LIMITER']), null, 2));
  const draftName = options.draftDir.split(/[\\/]/).filter(Boolean).pop()!;
  const vars = { ORIGIN_URL: options.originUrl, DRAFT_MODEL: draftName };

  const start = (name: string, config: string, port: number) =>
    spawnEdge({ name, port, args: ['-c', config, '--persist-to', persistTo, '--env-file', secretsFile, ...Object.entries(vars).flatMap(([k, v]) => ['--var', `${k}:${v}`])], registry, log: options.log });
  const started = await Promise.allSettled([start(names.a, configA, options.ports[0]), start(names.b, configB, options.ports[1])]);
  const [a, b] = started.map((s) => (s.status === 'fulfilled' ? s.value : null));
  const cleanup = async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await rm(work, { recursive: true, force: true });
  };
  if (!a || !b) {
    await cleanup();
    const reasons = started.flatMap((s) => (s.status === 'rejected' ? [String((s.reason as Error)?.message ?? s.reason)] : []));
    throw new Error(`starting the two isolates failed:\n${reasons.join('\n')}`);
  }

  const { admin, createTenantKey } = adminApi(a.url, adminSecret);
  return { a, b, adminSecret, admin, createTenantKey, stop: cleanup };
}

async function spawnEdge(options: { name: string; port: number; args: string[]; registry: string; log?: (line: string) => void }): Promise<IsolateEdge> {
  const url = `http://127.0.0.1:${options.port}`;
  options.log?.(`starting ${options.name} (wrangler dev) on ${url}`);
  const child = spawn(
    process.execPath,
    ['node_modules/wrangler/bin/wrangler.js', 'dev', '--ip', '127.0.0.1', '--port', String(options.port), '--inspector-port', '0', '--show-interactive-dev-session=false', ...options.args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...wranglerEnv, WRANGLER_REGISTRY_PATH: options.registry, WRANGLER_LOG: process.env.WRANGLER_LOG ?? 'warn' } },
  );
  const service = await supervise(child, `${url}/health`, url, `[${options.name}]`, 120_000, { log: options.log });
  return { name: options.name, url, process: child, output: service.output, stop: service.stop };
}
