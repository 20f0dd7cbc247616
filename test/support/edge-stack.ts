import type { TestProject } from 'vitest/node';
import { startStack, type Stack } from '../../scripts/stack';
import { DRAFT_DIR, TARGET_DIR } from './models';

/** Starts the real local stack once for the edge tests: origin process + wrangler dev (workerd, the test Worker). */
let stack: Stack | undefined;

export async function setup(project: TestProject) {
  const originPort = Number(process.env.TEST_ORIGIN_PORT ?? 18788);
  const edgePort = Number(process.env.TEST_EDGE_PORT ?? 18787);
  stack = await startStack({
    originPort,
    edgePort,
    // Per port, so several test runs on one machine never share local state.
    persistTo: `.wrangler/test-state-${edgePort}`,
    targetDir: TARGET_DIR,
    draftDir: DRAFT_DIR,
    // The tests' own tenant: no limits, so tests of limits make tenants of their own.
    tenant: { name: `tests-${Date.now()}` },
    log: (line) => console.log(`[edge-stack] ${line}`),
  });
  project.provide('edgeUrl', stack.edgeUrl);
  project.provide('originUrl', stack.originUrl);
  project.provide('apiKey', stack.edge.apiKey);
  project.provide('adminSecret', stack.edge.adminSecret);
}

export async function teardown() {
  await stack?.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    edgeUrl: string;
    originUrl: string;
    apiKey: string;
    adminSecret: string;
  }
}
