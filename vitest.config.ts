import { defineConfig } from 'vitest/config';

/**
 * Two projects: `unit` runs in Node against real models (onnxruntime-node /
 * -web) without servers; `edge` starts the real stack once (origin process +
 * `wrangler dev` in workerd) and sends HTTP requests to it.
 */
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/edge/**'],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'edge',
          include: ['test/edge/**/*.test.ts'],
          globalSetup: ['test/support/edge-stack.ts'],
          testTimeout: 180_000,
          hookTimeout: 180_000,
          // One stack, shared: files run one after another so timings and caches do not interfere.
          fileParallelism: false,
        },
      },
    ],
  },
});
