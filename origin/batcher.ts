import type { OriginMetrics } from './metrics';
import type { BatchRunner, ForwardQueue } from './queue';
import type { TargetModel, TargetPass, TargetRow } from './target';
import type { ForwardTarget } from './verify';

/**
 * The target behind the batching queue (ARCHITECTURE.md: Verify protocol,
 * "Batching"): every verify round, generate step and session round asks for
 * its logits through `queue.runBatched`, and rows that wait together run as
 * one `session.run` (TargetModel.logitsFromBatch → CausalLM.forwardBatch),
 * each row with its own target KV. A caller sees a `ForwardTarget` as before;
 * its result also carries its wait, its batch size and the pass's own time.
 */
export interface TargetBatcher {
  /** A target for one caller: `signal` drops its waiting passes when the caller leaves. */
  target(endpoint: 'verify' | 'generate', signal?: AbortSignal): ForwardTarget;
}

export function targetBatcher(target: Pick<TargetModel, 'config' | 'logitsFromBatch'>, queue: ForwardQueue, metrics?: OriginMetrics): TargetBatcher {
  // Looked up per pass, not bound once: the GPU cost model (origin/cost-model.ts) wraps the instance's method.
  const runner: BatchRunner<TargetRow, TargetPass> = {
    run: async (rows) => {
      const results = await target.logitsFromBatch(rows);
      metrics?.batchSize.observe({}, rows.length);
      metrics?.batchTokens.observe({}, rows.reduce((sum, row, i) => sum + row.tokens.length - results[i].cachedTokens, 0));
      return results;
    },
  };
  return {
    target: (endpoint, signal) => ({
      config: target.config,
      logitsFrom: async (tokens, firstRow, cacheSalt) => {
        const outcome = await queue.runBatched(runner, { tokens, firstRow, cacheSalt }, signal);
        metrics?.forwardMs.observe({ endpoint }, outcome.passMs);
        return { ...outcome.value, queueMs: outcome.queueMs, batchSize: outcome.batchSize, passMs: outcome.passMs };
      },
    }),
  };
}
