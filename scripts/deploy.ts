import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { readWranglerConfig } from './wrangler-config';
import { edgeConfig, LOOPBACK_HOSTS } from '../functions/config';
import type { Env } from '../functions/env';
import { buildBundle, checkBundle, describeBundle } from './bundle-check';
import { uploadModels, verifiedModelFiles } from './models-upload';

/**
 * `npm run deploy -- [--dry-run] [--env production] [--config wrangler.toml] [model dirs...]`
 *
 * Checks first, then changes things, in this order (README: Deploying):
 *   1. the environment's configuration: its vars parse (functions/config.ts, the
 *      Worker's own parser), every origin is https:// and not a placeholder or
 *      loopback, the D1 database_id is not the placeholder, the bindings exist;
 *   2. the secrets the configuration needs are set (`wrangler secret list`);
 *   3. the bundle (`wrangler deploy --dry-run`): size budget, no test-only routes;
 *   4. the model folders go up to the MODELS bucket (verified, resumable);
 *   5. `wrangler d1 migrations apply DB --remote`;
 *   6. `wrangler deploy`.
 * With --dry-run it does 1 and 3 and says what 2 and 4-6 would do: nothing
 * leaves this machine, no account needed.
 */
export interface ConfigCheck {
  env: string;
  workerName: string;
  problems: string[];
  notes: string[];
  /** Secrets the Worker needs with this configuration. */
  requiredSecrets: string[];
  /** Model folder the Worker reads (DRAFT_MODEL). */
  draftModel: string | null;
}

/** The parts of wrangler's resolved configuration checked here. */
interface WranglerEnvConfig {
  name?: string;
  vars?: Record<string, unknown>;
  d1_databases: Array<{ binding: string; database_name?: string; database_id?: string }>;
  r2_buckets: Array<{ binding: string; bucket_name?: string }>;
  durable_objects: { bindings: Array<{ name: string }> };
  queues: { producers?: Array<{ queue: string }>; consumers?: Array<{ queue: string }> };
  limits?: { cpu_ms?: number };
  placement?: { mode?: string };
  observability?: { enabled?: boolean };
}

const PLACEHOLDER_DATABASE_ID = /^0{8}-0{4}-0{4}-0{4}-0{12}$/;
const SECRETS = ['ADMIN_SECRET', 'ORIGIN_SECRET', 'ORIGIN_API_KEY', 'WEBHOOK_SECRETS_KEY'] as const;

/** Everything about `env` in the wrangler configuration that can be checked without an account. */
export function checkDeployConfig(options: { config?: string; env?: string } = {}): ConfigCheck {
  const env = options.env ?? 'production';
  const configPath = options.config ?? 'wrangler.toml';
  const section = `[env.${env}]`;
  const problems: string[] = [];
  const notes: string[] = [];
  let config: WranglerEnvConfig;
  try {
    config = readWranglerConfig(configPath, env) as unknown as WranglerEnvConfig;
  } catch (err) {
    return { env, workerName: '', problems: [`${configPath}: ${(err as Error).message.trim()}`], notes, requiredSecrets: [], draftModel: null };
  }
  const vars = (config.vars ?? {}) as Record<string, unknown>;

  // Secrets are never vars: a var is plain text in the file and the dashboard.
  for (const name of SECRETS) {
    if (vars[name] !== undefined) problems.push(`${section} vars: ${name} is a secret; remove it from the vars and run \`npx wrangler secret put ${name} --env ${env}\``);
  }

  // The Worker's own parser: what would fail at its first request fails here.
  let origins: Array<{ id: string; url: string; kind: string }> = [];
  try {
    const parsed = edgeConfig({ ...(vars as Record<string, string>) } as unknown as Env);
    origins = parsed.origins;
  } catch (err) {
    problems.push(`${section} vars: ${(err as Error).message.replace(/^edgespec configuration \(wrangler\.toml \[vars\]\): /, '')}`);
  }
  const allowHttp = vars.ALLOW_HTTP_ORIGINS === 'on';
  for (const origin of origins) {
    const url = new URL(origin.url);
    const name = `origin "${origin.id}" (${vars.ORIGINS ? 'ORIGINS' : 'ORIGIN_URL'} = ${origin.url})`;
    if (LOOPBACK_HOSTS.has(url.hostname) || url.hostname === '0.0.0.0') problems.push(`${section} vars: ${name} is this machine; a deployed Worker cannot reach it: set your origin's public https:// URL`);
    else if (/(^|\.)example(\.(com|org|net))?$/.test(url.hostname)) problems.push(`${section} vars: ${name} is the placeholder: set your origin's https:// URL`);
    else if (url.protocol !== 'https:' && !allowHttp) problems.push(`${section} vars: ${name} is not https://: verify calls carry prompts and signatures, so they need TLS`);
    else if (url.protocol !== 'https:') notes.push(`${name} is plain http:// (ALLOW_HTTP_ORIGINS = "on"): only on a private network you trust`);
  }

  const db = config.d1_databases.find((d) => d.binding === 'DB');
  if (!db) problems.push(`${section}: no [[env.${env}.d1_databases]] binding DB (tenants and API keys)`);
  else if (!db.database_id || PLACEHOLDER_DATABASE_ID.test(db.database_id)) {
    problems.push(`${section} d1_databases: database_id of DB is the placeholder: run \`npx wrangler d1 create ${db.database_name ?? 'edgespec'}\` and put the id it prints in [[env.${env}.d1_databases]]`);
  }
  const models = config.r2_buckets.find((b) => b.binding === 'MODELS');
  if (!models?.bucket_name) problems.push(`${section}: no [[env.${env}.r2_buckets]] binding MODELS (the draft model folders)`);
  const draftModel = typeof vars.DRAFT_MODEL === 'string' ? vars.DRAFT_MODEL : null;
  for (const name of ['PREFIX_CACHE', 'RATE_LIMITER']) {
    if (!config.durable_objects.bindings.some((b) => b.name === name)) problems.push(`${section}: no [[env.${env}.durable_objects.bindings]] ${name}`);
  }

  // WEBHOOK_SECRETS_KEY seals webhook and trigger signing secrets in D1 (functions/webhooks/secret-box.ts):
  // without it they are sealed under the public development key.
  const requiredSecrets = ['ADMIN_SECRET', 'WEBHOOK_SECRETS_KEY'];
  if (origins.some((o) => o.kind === 'reference')) requiredSecrets.push('ORIGIN_SECRET');
  if (origins.some((o) => o.kind !== 'reference')) requiredSecrets.push('ORIGIN_API_KEY');

  notes.push(
    `CPU limit ${config.limits?.cpu_ms ? `${config.limits.cpu_ms} ms` : 'the default 30 s'} per request; placement ${config.placement?.mode ?? 'default (next to each client)'}; observability ${config.observability?.enabled ? 'on' : 'off'}`,
  );
  const queues = [...new Set([...(config.queues.producers ?? []).map((q) => q.queue), ...(config.queues.consumers ?? []).map((q) => q.queue)])];
  if (queues.length) notes.push(`queues must exist (once: \`npx wrangler queues create <name>\`): ${queues.join(', ')}`);
  return { env, workerName: config.name ?? '', problems, notes, requiredSecrets, draftModel };
}

/** The required secrets `wrangler secret list --format json` does not list. */
export function missingSecrets(secretListJson: string, required: string[]): string[] {
  const listed = new Set((JSON.parse(secretListJson) as Array<{ name: string }>).map((s) => s.name));
  return required.filter((name) => !listed.has(name));
}

const wranglerEnv = { ...process.env, WRANGLER_SEND_METRICS: 'false' };
const wranglerJs = 'node_modules/wrangler/bin/wrangler.js';

async function wranglerOutput(args: string[]): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [wranglerJs, ...args], { env: wranglerEnv, maxBuffer: 16 * 2 ** 20 });
    return stdout;
  } catch (err) {
    const { stdout, stderr, message } = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`wrangler ${args.join(' ')} failed:\n${(stdout ?? '') + (stderr ?? '') || message}`);
  }
}

/** A wrangler command with its output on this terminal. */
function wranglerLive(args: string[]): Promise<void> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [wranglerJs, ...args], { stdio: 'inherit', env: wranglerEnv });
    child.on('error', fail);
    child.on('exit', (code) => (code === 0 ? done() : fail(new Error(`wrangler ${args.join(' ')} exited with code ${code}`))));
  });
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'dry-run': { type: 'boolean', default: false },
      env: { type: 'string', default: 'production' },
      config: { type: 'string', default: 'wrangler.toml' },
    },
  });
  const dryRun = values['dry-run'];
  const env = values.env!;
  const configPath = values.config!;
  const log = (line: string) => console.log(`[deploy] ${line}`);
  const fail = (lines: string[]): never => {
    for (const line of lines) console.error(`[deploy] ✗ ${line}`);
    console.error(`[deploy] nothing was ${dryRun ? 'built' : 'uploaded or deployed'}: fix the above and run again`);
    process.exit(1);
  };

  // 1. Configuration.
  log(`checking ${configPath} [env.${env}]${dryRun ? ' (dry run: nothing leaves this machine)' : ''}`);
  const check = checkDeployConfig({ config: configPath, env });
  const modelDirs = positionals.length ? positionals : check.draftModel ? [`models/${check.draftModel}`] : [];
  if (check.draftModel && !positionals.length && !existsSync(modelDirs[0])) {
    check.problems.push(`DRAFT_MODEL = "${check.draftModel}" but there is no ${modelDirs[0]} to upload: name the folder (npm run deploy -- path/to/${check.draftModel})`);
  }
  if (check.draftModel && positionals.length && !modelDirs.some((d) => resolve(d).split(/[\\/]/).pop() === check.draftModel)) {
    check.problems.push(`DRAFT_MODEL = "${check.draftModel}" is not among the folders to upload (${modelDirs.join(', ')}): the Worker would find no model`);
  }
  for (const dir of modelDirs) {
    if (!existsSync(dir)) continue;
    const files = await verifiedModelFiles(dir).catch((err: Error) => void check.problems.push(err.message));
    if (files) check.notes.push(`${dir}: ${files.length} files match SHA256SUMS (${(files.reduce((s, f) => s + f.size, 0) / 1e6).toFixed(2)} MB)`);
  }
  if (check.problems.length) fail(check.problems);
  for (const note of check.notes) log(`  ${note}`);
  log(`  configuration ok: Worker ${check.workerName}, ${check.requiredSecrets.length} secret(s) needed, model ${modelDirs.join(', ')}`);

  // 2. Secrets.
  const secretsNeeded = check.requiredSecrets.join(', ');
  if (dryRun) log(`would check: \`wrangler secret list --env ${env}\` lists ${secretsNeeded}`);
  else {
    let listed: string;
    try {
      listed = await wranglerOutput(['secret', 'list', '--env', env, '--config', configPath, '--format', 'json']);
    } catch (err) {
      const message = (err as Error).message;
      fail([
        /does not exist|not found|10007/i.test(message)
          ? `the Worker ${check.workerName} does not exist yet: set its secrets first, which creates it (\`npx wrangler secret put ${check.requiredSecrets[0]} --env ${env}\`)`
          : `could not list the secrets (is \`npx wrangler login\` or CLOUDFLARE_API_TOKEN set?): ${message}`,
      ]);
      return;
    }
    const missing = missingSecrets(listed.slice(listed.indexOf('[')), check.requiredSecrets);
    if (missing.length) fail(missing.map((name) => `secret ${name} is not set: \`npx wrangler secret put ${name} --env ${env}\`${name === 'ORIGIN_SECRET' ? ' (the same value your origins run with)' : name === 'ADMIN_SECRET' ? ' (a long random string; npm run keys uses it)' : name === 'WEBHOOK_SECRETS_KEY' ? ' (at least 32 random characters; keep it: stored webhook secrets open only with it)' : ''}`));
    log(`  secrets set: ${secretsNeeded}`);
  }

  // 3. Bundle: built and checked before anything is uploaded.
  const outdir = await mkdtemp(join(tmpdir(), 'edgespec-deploy-'));
  try {
    const report = await checkBundle(outdir, { env, wranglerOutput: await buildBundle(env, outdir, configPath) });
    for (const line of describeBundle(report)) log(`  ${line}`);
    if (report.problems.length) fail(report.problems);
  } finally {
    await rm(outdir, { recursive: true, force: true });
  }

  if (dryRun) {
    log('would then run:');
    log(`  npm run models:upload -- --remote --env ${env} ${modelDirs.join(' ')}   (verified against SHA256SUMS, skipping what is there)`);
    log(`  npx wrangler d1 migrations apply DB --remote --env ${env}`);
    log(`  npx wrangler deploy --env ${env}`);
    log('dry run ok');
    return;
  }

  // 4-6. Models, migrations, the Worker.
  log(`uploading ${modelDirs.join(', ')}`);
  await uploadModels({ remote: true, env, config: configPath, modelDirs, log: (line) => log(`  ${line}`) });
  log('applying D1 migrations');
  await wranglerLive(['d1', 'migrations', 'apply', 'DB', '--remote', '--env', env, '--config', configPath]);
  log(`deploying ${check.workerName}`);
  await wranglerLive(['deploy', '--env', env, '--config', configPath]);
  log(`deployed. First API key: EDGESPEC_URL=https://<the URL above> ADMIN_SECRET=<yours> npm run keys -- create --tenant <name>`);
}


if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: Error) => {
    console.error(`[deploy] ✗ ${err.message}`);
    process.exit(1);
  });
}
