import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildAndCheckBundle, checkBundle, FREE_PLAN_LIMIT_BYTES, GZIP_BUDGET_BYTES, PAID_PLAN_LIMIT_BYTES } from '../../scripts/bundle-check';

/**
 * The production bundle as `wrangler deploy` would upload it (scripts/bundle-check.ts):
 * inside the gzip budget, with onnxruntime-web's WASM in it and no test-only
 * routes. CI runs this, so a bundle that would not deploy fails here first.
 */
describe('production bundle', () => {
  it('fits the budget, holds the WASM module and no /internal/ routes', async () => {
    const report = await buildAndCheckBundle({ env: 'production' });
    expect(report.problems).toEqual([]);
    expect(report.internalRoutes).toEqual([]);
    const wasm = report.files.find((f) => f.name.endsWith('.wasm'))!;
    expect(wasm.bytes).toBeGreaterThan(10e6);
    expect(report.gzipBytes).toBeLessThanOrEqual(GZIP_BUDGET_BYTES);
    expect(GZIP_BUDGET_BYTES).toBeLessThan(PAID_PLAN_LIMIT_BYTES);
    // Our gzip agrees with wrangler's own count within 2%.
    expect(report.wrangler).not.toBeNull();
    expect(Math.abs(report.gzipBytes - report.wrangler!.gzipBytes) / report.wrangler!.gzipBytes).toBeLessThan(0.02);
    // The free plan cannot hold it: the WASM alone passes its limit (README: Deploying).
    expect(wasm.gzipBytes).toBeGreaterThan(FREE_PLAN_LIMIT_BYTES);
  });

  it('catches test-only routes: the test Worker bundle is refused', async () => {
    const report = await buildAndCheckBundle({ env: 'test' });
    expect(report.internalRoutes.length).toBeGreaterThan(0);
    expect(report.problems.join('\n')).toMatch(/test-only routes/);
  });

  it('catches a bundle over the budget', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgespec-bundle-test-'));
    try {
      await writeFile(join(dir, 'index.js'), 'export default { fetch() { return new Response("ok") } }');
      await writeFile(join(dir, 'index.js.map'), 'x'.repeat(10_000));
      const report = await checkBundle(dir, { budgetBytes: 10 });
      expect(report.files.map((f) => f.name)).toEqual(['index.js']);
      expect(report.problems.join('\n')).toMatch(/over the budget/);
      expect(report.problems.join('\n')).toMatch(/no \.wasm module/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
