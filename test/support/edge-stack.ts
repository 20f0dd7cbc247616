import type { TestProject } from 'vitest/node';
import { startStack, type Stack } from '../../scripts/stack';
import { DRAFT_DIR, TARGET_DIR } from './models';

/** Starts the real local stack once for the edge tests: origin process + wrangler dev (workerd). */
let stack: Stack | undefined;

export async function setup(project: TestProject) {
  const originPort = Number(process.env.TEST_ORIGIN_PORT ?? 18788);
  const edgePort = Number(process.env.TEST_EDGE_PORT ?? 18787);
  stack = await startStack({
    originPort,
    edgePort,
    // Per port, so several test runs on one machine never share local state.
    persistTo: `.wrangler/test-state-${edgePort}`,
    // Test hooks: /internal/prefix-cache and the test tenant header (functions/routes/prefix-cache-internal.ts).
    vars: { TEST_ROUTES: 'on' },
    targetDir: TARGET_DIR,
    draftDir: DRAFT_DIR,
    log: (line) => console.log(`[edge-stack] ${line}`),
  });
  project.provide('edgeUrl', stack.edgeUrl);
  project.provide('originUrl', stack.originUrl);
}

export async function teardown() {
  await stack?.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    edgeUrl: string;
    originUrl: string;
  }
}
