import { Hono } from 'hono';
import type { EdgeEnv } from '../context';
import { wasmHeapBytes } from '../draft/ort-workerd';
import { isolateMemory } from '../middleware/admission';
import { apiKeyAuth } from '../middleware/api-key-auth';

/**
 * What this isolate holds, in the test Worker only (functions/testing/entry.ts):
 * whether ORT's WASM has been instantiated yet, its heap, and the memory
 * admission's estimate (functions/middleware/admission.ts). The cold-start test
 * reads it before and after the first generation, so it is mounted ahead of the
 * `/internal/*` middleware that loads the draft engine (reading it must not be
 * what loads it) and carries its own API-key auth.
 */
export const isolateRoutes = new Hono<EdgeEnv>();

isolateRoutes.get('/internal/isolate', apiKeyAuth, (c) => {
  const heap = wasmHeapBytes();
  const memory = isolateMemory(c.var.config.isolateMemoryBudgetBytes, heap);
  return c.json({
    wasm_instantiated: heap !== null,
    wasm_heap_bytes: heap,
    admission: {
      budget_bytes: memory.budgetBytes,
      js_base_bytes: memory.jsBaseBytes,
      wasm_heap_at_load_bytes: memory.wasmHeapAtLoadBytes,
      projected_heap_bytes: memory.projectedHeapBytes,
      in_flight: memory.inFlight,
      refusals: memory.refusals,
      reserved_bytes: memory.reservedBytes,
      estimated_bytes: memory.estimatedBytes,
    },
  });
});
