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
 */
export interface ForwardCostModel {
  name: string;
  /** Modelled duration in ms of one forward pass over `newTokens` positions after `contextTokens` cached ones. */
  forwardMs(newTokens: number, contextTokens: number): number;
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
  return {
    name: r.name,
    forwardMs: (newTokens, contextTokens) => Math.max(weightMs, newTokens * perTokenComputeMs) + (contextTokens + newTokens) * kvMsPerToken,
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

type LogitsFrom = (tokens: readonly number[], firstRow: number, cacheSalt?: string) => Promise<ForwardResult & { cachedTokens: number }>;

export interface HoldStats {
  passes: number;
  overruns: number;
}

/**
 * Hold every forward pass of `target` to the cost model's duration. Wraps the
 * instance's `logitsFrom`, so verify and generate (and any queue in front of
 * them) see a GPU-paced target without knowing it.
 */
export function holdForwardPasses(target: { logitsFrom: LogitsFrom }, model: ForwardCostModel): HoldStats {
  const stats: HoldStats = { passes: 0, overruns: 0 };
  const run = target.logitsFrom.bind(target);
  target.logitsFrom = async (tokens, firstRow, cacheSalt) => {
    const started = performance.now();
    const result = await run(tokens, firstRow, cacheSalt);
    const modelled = model.forwardMs(tokens.length - result.cachedTokens, result.cachedTokens);
    const left = modelled - (performance.now() - started);
    stats.passes++;
    if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
    else stats.overruns++;
    return result;
  };
  return stats;
}
