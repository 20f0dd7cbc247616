import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { gzipSync } from 'node:zlib';

/**
 * The production bundle, as `wrangler deploy` would upload it, checked before
 * anything is deployed (`npm run check:bundle`, `npm run deploy`, and
 * test/deploy/bundle.test.ts so CI fails on it):
 *
 *   - its gzipped size against GZIP_BUDGET_BYTES. Workers take 10 MB after
 *     compression on the paid plan, 3 MB on the free plan. The bundle is
 *     onnxruntime-web's WASM (14.2 MB, ≈ 3.3 MB gzipped: alone more than the
 *     free plan allows) plus ≈ 1.5 MB of JavaScript. 6 MB leaves room for the
 *     JavaScript to grow a lot (it is ≈ 0.5 MB gzipped) yet fails well before
 *     the 10 MB limit, so a dependency that doubles the bundle is caught here
 *     and not by a failed deploy;
 *   - that it contains no test-only routes: nothing under `/internal/` (they
 *     live in functions/testing, which only the test Worker imports).
 *
 * The start-up side (the global scope loads no model and instantiates no WASM)
 * is checked in workerd: test/edge/admission.test.ts, "cold start".
 */
export const GZIP_BUDGET_BYTES = 6_000_000;
export const PAID_PLAN_LIMIT_BYTES = 10_000_000;
export const FREE_PLAN_LIMIT_BYTES = 3_000_000;

export interface BundleFile {
  name: string;
  bytes: number;
  gzipBytes: number;
}

export interface BundleReport {
  env: string;
  files: BundleFile[];
  bytes: number;
  gzipBytes: number;
  /** What wrangler itself printed ("Total Upload: X KiB / gzip: Y KiB"), in bytes. */
  wrangler: { bytes: number; gzipBytes: number } | null;
  /** `/internal/` routes found in the JavaScript, with some context each. */
  internalRoutes: string[];
  problems: string[];
}

const wranglerEnv = { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false', CI: '1' };

/** `wrangler deploy --dry-run --outdir <outdir> --env <env>`: the upload, built and written, nothing sent. Returns wrangler's output. */
export async function buildBundle(env: string, outdir: string, config = 'wrangler.toml'): Promise<string> {
  const args = ['node_modules/wrangler/bin/wrangler.js', 'deploy', '--dry-run', '--outdir', outdir, '--config', config, `--env=${env}`];
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, args, { env: wranglerEnv, maxBuffer: 16 * 2 ** 20 });
    return stdout + stderr;
  } catch (err) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string };
    throw new Error(`wrangler deploy --dry-run --env ${env} failed:\n${stdout ?? ''}${stderr ?? ''}`);
  }
}

/** Sizes and contents of a built bundle in `outdir`. */
export async function checkBundle(outdir: string, options: { env?: string; wranglerOutput?: string; budgetBytes?: number } = {}): Promise<BundleReport> {
  const budget = options.budgetBytes ?? GZIP_BUDGET_BYTES;
  const names = (await readdir(outdir, { recursive: true })).map(String).sort();
  const files: BundleFile[] = [];
  const internalRoutes: string[] = [];
  for (const name of names) {
    const path = join(outdir, name);
    // Not uploaded: source maps (no upload_source_maps) and wrangler's note about the directory.
    if (!(await stat(path)).isFile() || name.endsWith('.map') || name === 'README.md') continue;
    const bytes = await readFile(path);
    files.push({ name, bytes: bytes.length, gzipBytes: gzipSync(bytes).length });
    if (/\.(m?js|cjs)$/.test(name)) {
      const text = bytes.toString('utf8');
      for (const match of text.matchAll(/\/internal\/[A-Za-z0-9_\-/:*]*/g)) {
        internalRoutes.push(`${name}: …${text.slice(Math.max(0, match.index! - 40), match.index! + match[0].length + 20).replace(/\s+/g, ' ')}…`);
      }
    }
  }
  const bytes = files.reduce((s, f) => s + f.bytes, 0);
  const gzipBytes = files.reduce((s, f) => s + f.gzipBytes, 0);
  const total = /Total Upload:\s*([\d.]+)\s*KiB\s*\/\s*gzip:\s*([\d.]+)\s*KiB/.exec(options.wranglerOutput ?? '');
  const wrangler = total ? { bytes: Math.round(Number(total[1]) * 1024), gzipBytes: Math.round(Number(total[2]) * 1024) } : null;
  const measured = Math.max(gzipBytes, wrangler?.gzipBytes ?? 0);
  const problems: string[] = [];
  if (!files.some((f) => f.name.endsWith('.wasm'))) problems.push('the bundle has no .wasm module: onnxruntime-web\'s WASM must be bundled (wrangler.toml [[rules]] CompiledWasm)');
  if (measured > budget) {
    problems.push(
      `the gzipped upload is ${mb(measured)}, over the budget of ${mb(budget)} (the paid plan's limit is ${mb(PAID_PLAN_LIMIT_BYTES)}): find what grew (${files.map((f) => `${f.name} ${mb(f.gzipBytes)}`).join(', ')})`,
    );
  }
  if (internalRoutes.length) problems.push(`the bundle contains test-only routes (/internal/*): only functions/testing/entry.ts may import functions/testing\n    ${internalRoutes.slice(0, 5).join('\n    ')}`);
  return { env: options.env ?? 'production', files, bytes, gzipBytes, wrangler, internalRoutes, problems };
}

/** Build the `env` Worker into a temporary directory and check it. */
export async function buildAndCheckBundle(options: { env?: string; budgetBytes?: number; keepOutdir?: string } = {}): Promise<BundleReport> {
  const env = options.env ?? 'production';
  const outdir = options.keepOutdir ?? (await mkdtemp(join(tmpdir(), 'edgespec-bundle-')));
  try {
    const wranglerOutput = await buildBundle(env, outdir);
    return await checkBundle(outdir, { env, wranglerOutput, budgetBytes: options.budgetBytes });
  } finally {
    if (!options.keepOutdir) await rm(outdir, { recursive: true, force: true });
  }
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(2)} MB`;

/** The report as lines for a terminal. */
export function describeBundle(report: BundleReport, budgetBytes = GZIP_BUDGET_BYTES): string[] {
  const width = Math.max(...report.files.map((f) => f.name.length), 4);
  const wasm = report.files.filter((f) => f.name.endsWith('.wasm')).reduce((s, f) => s + f.gzipBytes, 0);
  const js = report.gzipBytes - wasm;
  const lines = [
    `bundle of the ${report.env} Worker (wrangler deploy --dry-run):`,
    ...report.files.map((f) => `  ${f.name.padEnd(width)}  ${mb(f.bytes).padStart(9)}  gzip ${mb(f.gzipBytes).padStart(8)}`),
    `  ${'total'.padEnd(width)}  ${mb(report.bytes).padStart(9)}  gzip ${mb(report.gzipBytes).padStart(8)}` +
      (report.wrangler ? `   (wrangler: ${mb(report.wrangler.bytes)}, gzip ${mb(report.wrangler.gzipBytes)})` : ''),
    `budget ${mb(budgetBytes)} gzipped; paid plan ${mb(PAID_PLAN_LIMIT_BYTES)}; free plan ${mb(FREE_PLAN_LIMIT_BYTES)}`,
    `free plan: ${
      wasm > FREE_PLAN_LIMIT_BYTES
        ? `cannot hold it: onnxruntime-web's WASM alone is ${mb(wasm)} gzipped (+ ${mb(js)} of JavaScript); it would need an ORT build of only the operators the draft uses (a minimal build) under ≈ ${mb(FREE_PLAN_LIMIT_BYTES - js)}`
        : `${mb(report.gzipBytes)} of ${mb(FREE_PLAN_LIMIT_BYTES)}`
    }`,
    report.internalRoutes.length ? `test-only routes found: ${report.internalRoutes.length}` : 'no /internal/ routes',
  ];
  return lines;
}

async function main() {
  const { values } = parseArgs({ options: { env: { type: 'string', default: 'production' }, 'budget-mb': { type: 'string' }, outdir: { type: 'string' } } });
  const budgetBytes = values['budget-mb'] ? Number(values['budget-mb']) * 1e6 : GZIP_BUDGET_BYTES;
  if (!Number.isFinite(budgetBytes) || budgetBytes <= 0) throw new Error('--budget-mb must be a positive number');
  const report = await buildAndCheckBundle({ env: values.env, budgetBytes, keepOutdir: values.outdir });
  for (const line of describeBundle(report, budgetBytes)) console.log(`[bundle] ${line}`);
  if (report.problems.length) {
    for (const problem of report.problems) console.error(`[bundle] FAIL: ${problem}`);
    process.exit(1);
  }
  console.log('[bundle] ok');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: Error) => {
    console.error(`[bundle] ${err.message}`);
    process.exit(1);
  });
}
