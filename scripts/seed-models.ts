import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { getPlatformProxy, unstable_readConfig } from 'wrangler';

/**
 * Copies a model folder into the local R2 bucket that `wrangler dev` reads
 * (wrangler's own platform proxy over wrangler.toml's R2 binding and the same
 * persistence directory), skipping files whose SHA-256 is already there. The
 * deployed equivalent is `wrangler r2 object put`.
 */
export async function seedModels(options: { persistTo: string; modelDirs: string[]; log?: (line: string) => void }) {
  const log = options.log ?? (() => {});
  // Local only: skip fetching a real Request.cf object from the network.
  process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= 'false';
  // Only the R2 binding, taken from wrangler.toml: the proxy runs no Worker, so the
  // full config's Durable Object bindings would only print misleading warnings.
  const { r2_buckets, compatibility_date } = unstable_readConfig({ config: 'wrangler.toml' });
  const configDir = await mkdtemp(join(tmpdir(), 'edgespec-seed-'));
  const configPath = join(configDir, 'wrangler.json');
  await writeFile(configPath, JSON.stringify({ name: 'edgespec-seed', compatibility_date, r2_buckets }));
  // `wrangler dev --persist-to X` keeps its state in X/v3.
  const proxy = await getPlatformProxy<{ MODELS: R2Bucket }>({ configPath, persist: { path: join(resolve(options.persistTo), 'v3') }, remoteBindings: false });
  await rm(configDir, { recursive: true, force: true });
  try {
    const bucket = proxy.env.MODELS;
    for (const dir of options.modelDirs) {
      const name = resolve(dir).split(/[\\/]/).pop()!;
      let uploaded = 0;
      let bytes = 0;
      for (const file of await listFiles(dir)) {
        const path = relative(dir, file).split(/[\\/]/).join('/');
        if (path === 'MODEL_CARD.md' || path === 'SHA256SUMS') continue;
        const body = await readFile(file);
        const sha256 = createHash('sha256').update(body).digest('hex');
        const key = `${name}/${path}`;
        const existing = await bucket.head(key);
        if (existing?.customMetadata?.sha256 === sha256) continue;
        await bucket.put(key, new Uint8Array(body), { customMetadata: { sha256 } });
        uploaded++;
        bytes += body.length;
      }
      log(uploaded ? `seeded ${uploaded} file(s), ${(bytes / 1e6).toFixed(1)} MB, of ${name} into local R2` : `local R2 already holds ${name}`);
    }
  } finally {
    await proxy.dispose();
  }
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}
