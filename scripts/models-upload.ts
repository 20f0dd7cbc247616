import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getPlatformProxy } from 'wrangler';
import { readWranglerConfig } from './wrangler-config';

/**
 * Model folders into the MODELS R2 bucket, one implementation for every path:
 *
 *   - `npm run models:upload -- [--local | --remote] [--env E] [--persist-to DIR] [dirs...]`
 *     (default: models/edgespec-draft-trimmed, wrangler.toml's DRAFT_MODEL, into the local bucket `npm start` reads);
 *     every file is checked against the folder's SHA256SUMS first, and a
 *     mismatch refuses the whole folder before anything is uploaded;
 *   - `npm run deploy` (scripts/deploy.ts) calls `uploadModels` with remote: true;
 *   - the local stack (scripts/stack.ts, tests, benchmarks) calls `seedModels`:
 *     the same upload into local R2, without requiring SHA256SUMS (tests edit
 *     copies of the shipped folder).
 *
 * Both go through wrangler's platform proxy over the MODELS binding: local R2
 * (Miniflare, the persistence directory `wrangler dev` uses) or, with
 * `remote: true` on the binding, the real bucket through wrangler's remote
 * bindings (your `wrangler login` or CLOUDFLARE_API_TOKEN). `wrangler r2 object
 * put` cannot set custom metadata, which resuming needs.
 *
 * Each object carries its SHA-256 as custom metadata and is put with R2's
 * `sha256` integrity check (R2 refuses a body that does not hash to it). A file
 * whose object already has that SHA-256 and size is skipped, so a run that was
 * interrupted continues where it stopped; every uploaded object is read back
 * (size and metadata) before the next one. Files above `multipartAbove` go up
 * in parts (a Worker request body, which the remote proxy is, stops at 100 MB).
 */
export interface ModelFile {
  /** Path inside the folder, with forward slashes: the object key after `<folder>/`. */
  path: string;
  file: string;
  size: number;
  sha256: string;
}

/** Never uploaded: the model card is documentation, SHA256SUMS is this script's input. */
const NOT_UPLOADED = new Set(['MODEL_CARD.md', 'SHA256SUMS']);

/** The folder's files with their SHA-256, checked against its SHA256SUMS; throws naming every problem. */
export async function verifiedModelFiles(dir: string): Promise<ModelFile[]> {
  const sumsPath = join(dir, 'SHA256SUMS');
  const sumsText = await readFile(sumsPath, 'utf8').catch(() => null);
  if (sumsText === null) {
    throw new Error(`${dir} has no SHA256SUMS: nothing to verify the files against (write one with \`cd ${dir} && find . -type f ! -name SHA256SUMS | sed 's|^./||' | sort | xargs sha256sum > SHA256SUMS\`)`);
  }
  const expected = new Map<string, string>();
  for (const [i, line] of sumsText.split('\n').entries()) {
    if (!line.trim()) continue;
    const match = /^([0-9a-f]{64}) [ *](.+)$/.exec(line.trim());
    if (!match) throw new Error(`${sumsPath}:${i + 1} is not "<sha256>  <path>"`);
    expected.set(match[2].replace(/^\.\//, ''), match[1]);
  }
  const files = await hashFiles(dir);
  const problems: string[] = [];
  const present = new Set(files.map((f) => f.path));
  for (const f of files) {
    if (f.path === 'SHA256SUMS') continue;
    const want = expected.get(f.path);
    if (!want) problems.push(`${f.path}: not listed in SHA256SUMS`);
    else if (want !== f.sha256) problems.push(`${f.path}: sha256 ${f.sha256}, SHA256SUMS says ${want}`);
  }
  for (const path of expected.keys()) if (!present.has(path)) problems.push(`${path}: listed in SHA256SUMS but missing`);
  if (problems.length) {
    throw new Error(`${dir} does not match its SHA256SUMS; nothing was uploaded:\n  ${problems.join('\n  ')}\n(a changed file needs a new SHA256SUMS line; a half-copied folder needs copying again)`);
  }
  return files.filter((f) => !NOT_UPLOADED.has(f.path));
}

/** The folder's uploadable files with their SHA-256, unchecked (the local stack's seeding). */
export async function modelFiles(dir: string): Promise<ModelFile[]> {
  return (await hashFiles(dir)).filter((f) => !NOT_UPLOADED.has(f.path));
}

async function hashFiles(dir: string): Promise<ModelFile[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  const files = entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
  files.sort();
  return Promise.all(
    files.map(async (file) => {
      const hash = createHash('sha256');
      for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
      return { path: relative(dir, file).split(/[\\/]/).join('/'), file, size: (await stat(file)).size, sha256: hash.digest('hex') };
    }),
  );
}

export interface BucketTarget {
  /** The real bucket (remote bindings) instead of local R2. */
  remote: boolean;
  /** wrangler environment whose MODELS binding names the bucket ("" = top level). Default: production when remote, top level when local. */
  env?: string;
  /** Local R2: wrangler dev's --persist-to directory (default .wrangler/state, what `npm start` uses). */
  persistTo?: string;
  config?: string;
}

export interface ModelsBucket {
  bucket: R2Bucket;
  /** For messages: "local R2 (.wrangler/state)" or "R2 bucket edgespec-models (remote)". */
  where: string;
  bucketName: string;
  dispose(): Promise<void>;
}

/** The MODELS bucket of wrangler.toml's `env`, through wrangler's platform proxy. */
export async function openModelsBucket(target: BucketTarget): Promise<ModelsBucket> {
  const env = target.env ?? (target.remote ? 'production' : '');
  const configFile = target.config ?? 'wrangler.toml';
  const config = readWranglerConfig(configFile, env || undefined);
  const binding = config.r2_buckets.find((b: { binding: string; bucket_name?: string }) => b.binding === 'MODELS');
  if (!binding?.bucket_name) throw new Error(`${configFile}${env ? ` [env.${env}]` : ''} has no R2 binding MODELS with a bucket_name`);
  // Only the R2 binding: the proxy runs no Worker, so the config's Durable Objects and queues would only print warnings.
  const dir = await mkdtemp(join(tmpdir(), 'edgespec-models-'));
  const configPath = join(dir, 'wrangler.json');
  const r2 = { binding: 'MODELS', bucket_name: binding.bucket_name, ...(target.remote ? { remote: true } : {}) };
  await writeFile(configPath, JSON.stringify({ name: 'edgespec-models-upload', compatibility_date: config.compatibility_date, r2_buckets: [r2] }));
  const persistTo = resolve(target.persistTo ?? '.wrangler/state');
  // Local only: skip fetching a real Request.cf object from the network.
  if (!target.remote) process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= 'false';
  let proxy: Awaited<ReturnType<typeof getPlatformProxy<{ MODELS: R2Bucket }>>>;
  try {
    proxy = await getPlatformProxy<{ MODELS: R2Bucket }>({
      configPath,
      // `wrangler dev --persist-to X` keeps its state in X/v3.
      persist: target.remote ? false : { path: join(persistTo, 'v3') },
      remoteBindings: target.remote,
    });
  } catch (err) {
    throw new Error(
      target.remote
        ? `could not reach R2 bucket ${binding.bucket_name} (remote): ${(err as Error).message}\n(log in with \`npx wrangler login\`, or set CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID; create the bucket with \`npx wrangler r2 bucket create ${binding.bucket_name}\`)`
        : `could not open local R2 in ${persistTo}: ${(err as Error).message}`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return {
    bucket: proxy.env.MODELS,
    bucketName: binding.bucket_name,
    where: target.remote ? `R2 bucket ${binding.bucket_name} (remote)` : `local R2 (${relative(process.cwd(), persistTo) || '.'})`,
    dispose: () => proxy.dispose(),
  };
}

export interface UploadOptions {
  log?: (line: string) => void;
  /** Per-file lines (name, MB, uploaded/skipped); false = one summary line per folder. */
  perFile?: boolean;
  /** Files larger than this go up as a multipart upload (default 64 MiB). */
  multipartAbove?: number;
  /** Part size of a multipart upload (default 16 MiB; R2 wants ≥ 5 MiB, all but the last equal). */
  partBytes?: number;
}

export interface FolderResult {
  folder: string;
  uploaded: number;
  skipped: number;
  bytes: number;
}

const MB = (bytes: number) => `${(bytes / 1e6).toFixed(2)} MB`;

/** Upload `files` of the folder named `folder` under `<folder>/`, skipping what is there already, verifying what was put. */
export async function uploadModelFolder(bucket: R2Bucket, folder: string, files: ModelFile[], options: UploadOptions = {}): Promise<FolderResult> {
  const log = options.log ?? (() => {});
  const multipartAbove = options.multipartAbove ?? 64 * 2 ** 20;
  const partBytes = options.partBytes ?? 16 * 2 ** 20;
  const result: FolderResult = { folder, uploaded: 0, skipped: 0, bytes: 0 };
  const width = Math.max(...files.map((f) => f.path.length));
  for (const [i, f] of files.entries()) {
    const key = `${folder}/${f.path}`;
    const line = (what: string) => options.perFile && log(`  [${i + 1}/${files.length}] ${f.path.padEnd(width)}  ${MB(f.size).padStart(9)}  ${what}`);
    const existing = await bucket.head(key);
    if (existing && existing.size === f.size && existing.customMetadata?.sha256 === f.sha256) {
      result.skipped++;
      line('skipped (already there, sha256 matches)');
      continue;
    }
    const multipart = f.size > multipartAbove;
    if (multipart) await putMultipart(bucket, key, f, partBytes);
    else await bucket.put(key, await readFile(f.file), { sha256: f.sha256, customMetadata: { sha256: f.sha256 } });
    const stored = await bucket.head(key);
    const problem = !stored
      ? 'it is not there'
      : stored.size !== f.size
        ? `${stored.size} bytes stored, ${f.size} sent`
        : stored.customMetadata?.sha256 !== f.sha256
          ? `its sha256 metadata is ${stored.customMetadata?.sha256 ?? 'missing'}`
          : null;
    if (problem) throw new Error(`verifying ${key} after the upload failed: ${problem}; run again to retry it`);
    result.uploaded++;
    result.bytes += f.size;
    line(`uploaded${multipart ? ` in ${Math.ceil(f.size / partBytes)} parts` : ''}, verified`);
  }
  return result;
}

async function putMultipart(bucket: R2Bucket, key: string, f: ModelFile, partBytes: number): Promise<void> {
  const upload = await bucket.createMultipartUpload(key, { customMetadata: { sha256: f.sha256 } });
  const handle = await open(f.file);
  try {
    const parts: R2UploadedPart[] = [];
    for (let offset = 0, number = 1; offset < f.size; offset += partBytes, number++) {
      const buffer = Buffer.alloc(Math.min(partBytes, f.size - offset));
      await handle.read(buffer, 0, buffer.length, offset);
      parts.push(await upload.uploadPart(number, buffer));
    }
    await upload.complete(parts);
  } catch (err) {
    await upload.abort().catch(() => {});
    throw err;
  } finally {
    await handle.close();
  }
}

export interface UploadModelsOptions extends BucketTarget, UploadOptions {
  modelDirs: string[];
  /** Require and check each folder's SHA256SUMS (default true). */
  verify?: boolean;
}

/** Check every folder, then upload them; nothing is uploaded when any folder fails its check. */
export async function uploadModels(options: UploadModelsOptions): Promise<FolderResult[]> {
  const log = options.log ?? (() => {});
  const folders: Array<{ name: string; files: ModelFile[] }> = [];
  for (const dir of options.modelDirs) {
    const name = basename(resolve(dir));
    const files = options.verify === false ? await modelFiles(dir) : await verifiedModelFiles(dir);
    if (!files.length) throw new Error(`${dir} has no files to upload`);
    if (options.verify !== false) log(`${dir}: ${files.length} files match SHA256SUMS`);
    folders.push({ name, files });
  }
  const target = await openModelsBucket(options);
  try {
    const results: FolderResult[] = [];
    for (const { name, files } of folders) {
      if (options.perFile !== false) log(`${name} -> ${target.where}`);
      results.push(await uploadModelFolder(target.bucket, name, files, { ...options, perFile: options.perFile ?? true }));
    }
    return results;
  } finally {
    await target.dispose();
  }
}

/**
 * The local stack's seeding (scripts/stack.ts, tests, benchmarks): model
 * folders into the local R2 bucket `wrangler dev --persist-to persistTo` reads,
 * skipping files already there, one line per folder.
 */
export async function seedModels(options: { persistTo: string; modelDirs: string[]; log?: (line: string) => void }): Promise<void> {
  const log = options.log ?? (() => {});
  const results = await uploadModels({ remote: false, env: '', persistTo: options.persistTo, modelDirs: options.modelDirs, verify: false, perFile: false });
  for (const r of results) log(r.uploaded ? `seeded ${r.uploaded} file(s), ${(r.bytes / 1e6).toFixed(1)} MB, of ${r.folder} into local R2` : `local R2 already holds ${r.folder}`);
}


async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      local: { type: 'boolean', default: false },
      remote: { type: 'boolean', default: false },
      env: { type: 'string' },
      'persist-to': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log('npm run models:upload -- [--local | --remote] [--env NAME] [--persist-to DIR] [model dirs...]\n  default: models/edgespec-draft-trimmed (the default DRAFT_MODEL) into local R2 (.wrangler/state); --remote: the production MODELS bucket');
    return;
  }
  if (values.local && values.remote) throw new Error('--local or --remote, not both');
  if (values.remote && values['persist-to']) throw new Error('--persist-to is for local R2 only');
  const remote = values.remote;
  const started = Date.now();
  const results = await uploadModels({
    remote,
    env: values.env,
    persistTo: values['persist-to'],
    modelDirs: positionals.length ? positionals : ['models/edgespec-draft-trimmed'],
    log: (line) => console.log(`[models] ${line}`),
  });
  for (const r of results) console.log(`[models] ${r.folder}: ${r.uploaded} uploaded (${MB(r.bytes)}), ${r.skipped} skipped, in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: Error) => {
    console.error(`[models] ${err.message}`);
    process.exit(1);
  });
}
