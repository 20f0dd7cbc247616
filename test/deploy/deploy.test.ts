import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkDeployConfig, missingSecrets } from '../../scripts/deploy';

/**
 * scripts/deploy.ts: what it refuses before anything is uploaded, and a whole
 * `--dry-run` (configuration, bundle, plan; nothing leaves the machine). The
 * configurations are wrangler.toml with its production placeholders replaced,
 * written to a temporary directory (paths made absolute).
 */
let work: string;
let shipped: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'edgespec-deploy-test-'));
  shipped = await readFile('wrangler.toml', 'utf8');
});
afterAll(() => rm(work, { recursive: true, force: true }));

const REAL_ID = '4a0c5e9e-1b7e-4c55-9f53-3f1f2b8e7d21';

/** wrangler.toml with `edit` applied to its [env.production] part, at an absolute-path copy. */
async function configWith(name: string, edit: (production: string) => string): Promise<string> {
  const at = shipped.indexOf('[env.production]');
  expect(at).toBeGreaterThan(0);
  const text = (shipped.slice(0, at) + edit(shipped.slice(at))).replace(/^(main|migrations_dir|directory) = "([^"/][^"]*)"/gm, (_, key, path) => `${key} = "${resolve(path)}"`);
  const path = join(work, `${name}.toml`);
  await writeFile(path, text);
  return path;
}
const deployable = (p: string) => p.replace('https://origin.example', 'https://gpu.acme.dev').replace('00000000-0000-0000-0000-000000000000', REAL_ID);

describe('deploy configuration check', () => {
  it('refuses the shipped placeholders, naming what to fix', () => {
    const check = checkDeployConfig({ config: 'wrangler.toml', env: 'production' });
    expect(check.problems).toHaveLength(2);
    expect(check.problems[0]).toMatch(/ORIGIN_URL = https:\/\/origin\.example\) is the placeholder/);
    expect(check.problems[1]).toMatch(/database_id of DB is the placeholder: run `npx wrangler d1 create edgespec`/);
    expect(check.workerName).toBe('edgespec-production');
    expect(check.draftModel).toBe('edgespec-draft-trimmed');
  });

  it('accepts a filled-in production environment and says which secrets it needs', async () => {
    const check = checkDeployConfig({ config: await configWith('ok', deployable) });
    expect(check.problems).toEqual([]);
    expect(check.requiredSecrets).toEqual(['ADMIN_SECRET', 'WEBHOOK_SECRETS_KEY', 'ORIGIN_SECRET']);
    expect(check.notes.join('\n')).toMatch(/CPU limit 50000 ms per request; placement smart; observability on/);
  });

  it('refuses plain http, loopback, bad vars and secrets in vars', async () => {
    const http = checkDeployConfig({ config: await configWith('http', (p) => deployable(p).replace('https://gpu.acme.dev', 'http://gpu.acme.dev')) });
    expect(http.problems.join('\n')).toMatch(/origin "origin-0" uses plain http:\/\/ beyond loopback; use https:\/\//);
    const loopback = checkDeployConfig({ config: await configWith('loopback', (p) => deployable(p).replace('https://gpu.acme.dev', 'https://127.0.0.1:8788')) });
    expect(loopback.problems.join('\n')).toMatch(/is this machine; a deployed Worker cannot reach it/);
    const bad = checkDeployConfig({ config: await configWith('bad', (p) => deployable(p).replace('DRAFT_LENGTH = "4"', 'DRAFT_LENGTH = "99"')) });
    expect(bad.problems.join('\n')).toMatch(/DRAFT_LENGTH/);
    const secret = checkDeployConfig({ config: await configWith('secret', (p) => deployable(p).replace('MODEL_ID = "edgespec"', 'MODEL_ID = "edgespec"\nADMIN_SECRET = "hunter2hunter2hunter2"')) });
    expect(secret.problems.join('\n')).toMatch(/ADMIN_SECRET is a secret; remove it from the vars and run `npx wrangler secret put ADMIN_SECRET --env production`/);
  });

  it('needs ORIGIN_API_KEY for engine origins', async () => {
    const origins = JSON.stringify([{ id: 'sgl', url: 'https://sgl.acme.dev', kind: 'sglang', vocab_size: 4096, max_positions: 1024 }]);
    const check = checkDeployConfig({ config: await configWith('engines', (p) => deployable(p).replace('MODEL_ID = "edgespec"', `MODEL_ID = "edgespec"\nORIGINS = '${origins}'`)) });
    expect(check.problems).toEqual([]);
    expect(check.requiredSecrets).toEqual(['ADMIN_SECRET', 'WEBHOOK_SECRETS_KEY', 'ORIGIN_API_KEY']);
  });

  it('reads `wrangler secret list --format json`', () => {
    const listed = JSON.stringify([{ name: 'ADMIN_SECRET', type: 'secret_text' }]);
    expect(missingSecrets(listed, ['ADMIN_SECRET', 'ORIGIN_SECRET'])).toEqual(['ORIGIN_SECRET']);
  });
});

describe('npm run deploy -- --dry-run', () => {
  const run = async (config: string) =>
    promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/deploy.ts', '--dry-run', '--config', config], { env: { ...process.env, CI: '1' } }).then(
      (r) => ({ code: 0, out: r.stdout + r.stderr }),
      (e) => ({ code: e.code as number, out: `${e.stdout}${e.stderr}` }),
    );

  it('checks, builds and checks the bundle, and prints the plan', async () => {
    const { code, out } = await run(await configWith('dry', deployable));
    expect(out).toContain('dry run ok');
    expect(code).toBe(0);
    expect(out).toMatch(/would check: `wrangler secret list --env production` lists ADMIN_SECRET, WEBHOOK_SECRETS_KEY, ORIGIN_SECRET/);
    expect(out).toMatch(/models\/edgespec-draft-trimmed: 6 files match SHA256SUMS/);
    expect(out).toMatch(/no \/internal\/ routes/);
    expect(out).toMatch(/npx wrangler d1 migrations apply DB --remote --env production/);
  });

  it('stops at the configuration with the shipped placeholders', async () => {
    const { code, out } = await run('wrangler.toml');
    expect(code).toBe(1);
    expect(out).toMatch(/is the placeholder/);
    expect(out).toMatch(/nothing was built/);
  });
});
