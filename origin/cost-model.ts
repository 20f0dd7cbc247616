import type { ForwardResult } from '../shared/model';

/**
 * GPU cost models for the reference origin (ARCHITECTURE.md: "Benchmarking
 * honestly"). The real target still computes every token, so
 * acceptance stays real; the origin then holds each forward pass until the
 * modelled duration of the same pass on the named GPU and model has elapsed.
 * A pass that already took longer on this CPU is not shortened: it counts as
 * an overrun (reported by /health and in the origin's log).
 *
 * Roofline at batch 1: a decode pass reads every weight once (memory-bound),
 * so its time barely depends on how many tokens it verifies, until the FLOPs
 * of a long prefill catch up.
 *   t(n new tokens, c context) = max(W / (η_bw·BW), n·2P / (η_fl·F)) + c·kvBytes / (η_bw·BW)
 *
 * A batched pass (origin/queue.ts, continuous batching) over rows r with n_r
 * new tokens after c_r cached ones reads the weights once for all rows and
 * each row's own KV (paged attention reads no padding: Kwon et al. 2023,
 * vLLM), and computes every row's tokens:
 *   t = max(W / (η_bw·BW), Σ n_r · 2P / (η_fl·F)) + Σ (c_r + n_r)·kvBytes / (η_bw·BW)
 * so it stays memory-bound (about one batch-1 pass) until Σ n_r reaches the
 * roofline's ridge, W·η_fl·F / (2P·η_bw·BW) ≈ 184 tokens for the H100 model
 * below, where the compute term takes over. Batch 1 is the formula above.
 * Attention FLOPs (∝ n·c) are left out: at these contexts (≤ 1k) they are
 * under 2% of the 2P per token of an 8B model.
 */
export interface ForwardCostModel {
  name: string;
  /** Modelled duration in ms of one forward pass over `newTokens` positions after `contextTokens` cached ones. */
  forwardMs(newTokens: number, contextTokens: number): number;
  /** Modelled duration in ms of one batched pass over these rows (one row = `forwardMs`). */
  batchForwardMs(rows: ReadonlyArray<{ newTokens: number; contextTokens: number }>): number;
  /** Parameters and their sources, for BENCHMARKS.md and /health. */
  describe: string;
}

interface Roofline {
  name: string;
  params: number;
  weightBytes: number;
  kvBytesPerToken: number;
  bandwidthBytesPerS: number;
  bandwidthEfficiency: number;
  flopsPerS: number;
  flopsEfficiency: number;
  sources: string;
}

function roofline(r: Roofline): ForwardCostModel {
  const bw = r.bandwidthBytesPerS * r.bandwidthEfficiency;
  const flops = r.flopsPerS * r.flopsEfficiency;
  const weightMs = (r.weightBytes / bw) * 1000;
  const perTokenComputeMs = ((2 * r.params) / flops) * 1000;
  const kvMsPerToken = (r.kvBytesPerToken / bw) * 1000;
  const batchForwardMs = (rows: ReadonlyArray<{ newTokens: number; contextTokens: number }>) => {
    let tokens = 0;
    let kvTokens = 0;
    for (const row of rows) {
      tokens += row.newTokens;
      kvTokens += row.contextTokens + row.newTokens;
    }
    return Math.max(weightMs, tokens * perTokenComputeMs) + kvTokens * kvMsPerToken;
  };
  return {
    name: r.name,
    forwardMs: (newTokens, contextTokens) => batchForwardMs([{ newTokens, contextTokens }]),
    batchForwardMs,
    describe:
      `${r.name}: ${(r.params / 1e9).toFixed(2)}B params, ${(r.weightBytes / 1e9).toFixed(2)} GB weights, ${r.kvBytesPerToken / 1024} KiB KV/token; ` +
      `${(r.bandwidthBytesPerS / 1e12).toFixed(2)} TB/s HBM at ${r.bandwidthEfficiency * 100}% = ${weightMs.toFixed(2)} ms weight read per pass; ` +
      `${(r.flopsPerS / 1e12).toFixed(0)} TFLOP/s dense BF16 at ${r.flopsEfficiency * 100}% = ${(perTokenComputeMs * 1000).toFixed(1)} µs per token of compute. Sources: ${r.sources}`,
  };
}

export const COST_MODELS: Record<string, ForwardCostModel> = {
  'h100-llama-3.1-8b': roofline({
    name: 'h100-llama-3.1-8b',
    // Llama 3.1 8B model card: 8.03B parameters, BF16; 32 layers × 8 KV heads × 128 dims × (K, V) × 2 bytes = 128 KiB KV per token.
    params: 8.03e9,
    weightBytes: 8.03e9 * 2,
    kvBytesPerToken: 32 * 8 * 128 * 2 * 2,
    // NVIDIA H100 SXM5 datasheet: 3.35 TB/s HBM3, 989 TFLOP/s dense BF16 (1979 with sparsity).
    bandwidthBytesPerS: 3.35e12,
    flopsPerS: 989e12,
    // Assumed achieved fractions at batch 1 (memory-bound decode typically reaches 70-85% of peak bandwidth; prefill ~50% MFU).
    bandwidthEfficiency: 0.8,
    flopsEfficiency: 0.5,
    sources: 'Meta Llama 3.1 8B model card (parameters, GQA shape); NVIDIA H100 Tensor Core GPU datasheet (SXM5 bandwidth and BF16 throughput); efficiencies are stated assumptions.',
  }),
};

export function costModel(name: string): ForwardCostModel {
  const model = COST_MODELS[name];
  if (!model) throw new Error(`unknown cost model "${name}" (known: ${Object.keys(COST_MODELS).join(', ')})`);
  return model;
}

type Pass = ForwardResult & { cachedTokens: number };
type LogitsFrom = (tokens: readonly number[], firstRow: number, cacheSalt?: string) => Promise<Pass>;
type LogitsFromBatch = (rows: ReadonlyArray<{ tokens: readonly number[]; firstRow: number; cacheSalt?: string }>) => Promise<Pass[]>;

export interface HoldStats {
  passes: number;
  overruns: number;
  /** Rows the passes carried (one per pass at batch 1). */
  rows: number;
  /** Sum of the modelled durations of every pass: the GPU time the run would have used, ms. */
  modelledMs: number;
}

/**
 * Hold every forward pass of `target` to the cost model's duration. Wraps the
 * instance's `logitsFrom` and `logitsFromBatch`, so verify and generate (and
 * the queue in front of them) see a GPU-paced target without knowing it; a
 * batched pass is held once, to the duration of all its rows together.
 */
export function holdForwardPasses(target: { logitsFrom: LogitsFrom; logitsFromBatch?: LogitsFromBatch }, model: ForwardCostModel): HoldStats {
  const stats: HoldStats = { passes: 0, overruns: 0, rows: 0, modelledMs: 0 };
  const hold = async (started: number, rows: ReadonlyArray<{ tokens: readonly number[] }>, results: Pass[]) => {
    const modelled = model.batchForwardMs(rows.map((row, i) => ({ newTokens: row.tokens.length - results[i].cachedTokens, contextTokens: results[i].cachedTokens })));
    const left = modelled - (performance.now() - started);
    stats.passes++;
    stats.rows += rows.length;
    stats.modelledMs += modelled;
    if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
    else stats.overruns++;
  };
  const run = target.logitsFrom.bind(target);
  target.logitsFrom = async (tokens, firstRow, cacheSalt) => {
    const started = performance.now();
    const result = await run(tokens, firstRow, cacheSalt);
    await hold(started, [{ tokens }], [result]);
    return result;
  };
  if (target.logitsFromBatch) {
    const runBatch = target.logitsFromBatch.bind(target);
    target.logitsFromBatch = async (rows) => {
      const started = performance.now();
      const results = await runBatch(rows);
      await hold(started, rows, results);
      return results;
    };
  }
  return stats;
}
