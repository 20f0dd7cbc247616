/**
 * Multi-path drafts against single-path verification (ARCHITECTURE.md:
 * Multi-path drafts), same prompts, same seeds, lockstep with k = 4, in
 * process: the real draft (onnxruntime-node, int8) and target, the origin's
 * own verify code (origin/verify.ts, origin/verify-tree.ts) and the edge's
 * loop (functions/speculation/loop.ts), no HTTP, so only the drafts and the
 * rule differ between rows. Acceptance is real and hardware-independent.
 * Time is reported two ways, both labelled: the CPU wall time of the loop
 * here, and a GPU-cost-model round time = the draft's measured ms + RTT + the
 * cost model's duration of the round's pass (every row of a tree in one
 * batched pass: origin/cost-model.ts, batchForwardMs).
 *
 *   npx tsx bench/multipath.ts [--quick]    (also: npm run bench -- --only multipath)
 */
import { pathToFileURL } from 'node:url';
import { DraftModelProposer } from '../functions/proposers/draft-model';
import { LinkEstimator } from '../functions/speculation/controller';
import { decode, type SpeculationPlan } from '../functions/speculation/loop';
import { newStats } from '../functions/speculation/stats';
import type { OriginClient } from '../functions/upstream/client';
import { costModel } from '../origin/cost-model';
import { TargetModel } from '../origin/target';
import { verifyDraft } from '../origin/verify';
import { treePaths } from '../shared/sampling';
import type { VerifyRequest } from '../shared/protocol';
import { DRAFT_DIR, loadFolderTokenizer, loadNodeModel, TARGET_DIR } from '../test/support/models';
import { heldOutPrompts } from '../test/support/prompts';
import { round } from './measure';
import type { BenchRecord } from './records';

const COST_MODEL = 'h100-llama-3.1-8b';
const K = 4;
const ALTERNATIVES = 3;
const RTTS = [0, 5];

interface Variant {
  mode: string;
  plan: SpeculationPlan;
}

const variants: Variant[] = [
  { mode: 'path-token', plan: { mode: 'lockstep', method: 'token', draftLength: K, depth: 1, minConfidence: 0 } },
  { mode: 'path-block', plan: { mode: 'lockstep', method: 'block', draftLength: K, depth: 1, minConfidence: 0 } },
  { mode: `tree-token (${ALTERNATIVES} alt.)`, plan: { mode: 'lockstep', method: 'token', draftLength: K, depth: 1, minConfidence: 0, branches: ALTERNATIVES } },
  { mode: `tree-block (${ALTERNATIVES} alt.)`, plan: { mode: 'lockstep', method: 'block', draftLength: K, depth: 1, minConfidence: 0, branches: ALTERNATIVES } },
  // The alternatives continued by the draft to the path's depth (speculation.branch_length = k).
  { mode: `tree-token (${ALTERNATIVES} alt. continued)`, plan: { mode: 'lockstep', method: 'token', draftLength: K, depth: 1, minConfidence: 0, branches: ALTERNATIVES, branchLength: K } },
  { mode: `tree-block (${ALTERNATIVES} alt. continued)`, plan: { mode: 'lockstep', method: 'block', draftLength: K, depth: 1, minConfidence: 0, branches: ALTERNATIVES, branchLength: K } },
];

interface Tally {
  tokens: number;
  rounds: number;
  accepted: number;
  branchTaken: number;
  draftMs: number;
  wallMs: number;
  modelledVerifyMs: number;
  rowTokens: number;
  /** Tree rounds only: accepted drafts of the tree, and of its path alone verified on the same context with the same draws. */
  pairedTree: number;
  pairedPath: number;
}

export async function multipathSuite(options: { quick: boolean; log: (line: string) => void }): Promise<BenchRecord[]> {
  const [draft, target, tokenizer] = await Promise.all([loadNodeModel(DRAFT_DIR, 'quantized'), loadNodeModel(TARGET_DIR), loadFolderTokenizer(TARGET_DIR)]);
  const model = new TargetModel(target.lm);
  const gpu = costModel(COST_MODEL);
  const prompts = heldOutPrompts(options.quick ? 4 : 12, 400).map((text) => tokenizer.encode(text).slice(-256));
  const maxTokens = options.quick ? 48 : 128;
  const records: BenchRecord[] = [];

  for (const temperature of [0.8, 0]) {
    const tallies = new Map<string, Tally>(variants.map((v) => [v.mode, { tokens: 0, rounds: 0, accepted: 0, branchTaken: 0, draftMs: 0, wallMs: 0, modelledVerifyMs: 0, rowTokens: 0, pairedTree: 0, pairedPath: 0 }]));
    for (const [i, prompt] of prompts.entries()) {
      // Rotating order, so every variant sees the same machine load.
      for (let j = 0; j < variants.length; j++) {
        const variant = variants[(i + j) % variants.length];
        const tally = tallies.get(variant.mode)!;
        const origin = countingOrigin(model, target.config.vocabSize, target.config.maxPositions, async (request, accepted) => {
          if (request.branches?.length) {
            // Paired: the same round's path alone, same context and draws (row 0 of a tree reads the path's draws).
            const { branches: _, ...path } = request;
            tally.pairedTree += accepted;
            tally.pairedPath += (await verifyDraft(model, path)).accepted;
          }
          const rows = treePaths([...request.draft.map((d, n) => ({ ...d, parent: n - 1 })), ...(request.branches ?? [])]);
          const newTokens = rows.map((row) => row.length + 1);
          tally.rowTokens += newTokens.reduce((a, b) => a + b, 0);
          tally.modelledVerifyMs += gpu.batchForwardMs(newTokens.map((n) => ({ newTokens: n, contextTokens: request.context.length - 1 })));
        });
        const stats = newStats(variant.plan.mode, variant.plan.draftLength, variant.plan.method);
        const started = performance.now();
        const input = { prompt, maxTokens, sampling: { temperature, top_p: 1, top_k: 0, seed: 1000 + i }, stopTokenIds: new Set<number>(), maxPositions: target.config.maxPositions };
        for await (const piece of decode(input, variant.plan, () => new DraftModelProposer(draft.lm, 32), origin, stats, undefined, new LinkEstimator())) tally.tokens += piece.length;
        tally.wallMs += performance.now() - started;
        tally.rounds += stats.rounds;
        tally.accepted += stats.accepted;
        tally.branchTaken += stats.tree.branchTaken;
        tally.draftMs += stats.draftMs;
      }
    }
    const base = tallies.get(variants[0].mode)!;
    const baseAccepted = base.accepted / base.rounds;
    for (const { mode } of variants) {
      const t = tallies.get(mode)!;
      const acceptedPerRound = t.accepted / t.rounds;
      const record: BenchRecord = {
        suite: 'multipath',
        mode,
        rtt_ms: 0,
        origin_cost: COST_MODEL,
        temperature,
        draft_length: K,
        // tokens/s: the GPU-cost-model round time at RTT 0 (the CPU wall time is cpu_tokens_per_s).
        tokens_per_s: round((t.tokens / (t.draftMs + t.modelledVerifyMs)) * 1000),
        ttft_ms: 0,
        mean_accepted: round(t.tokens / t.rounds),
        draft_ms_per_token: round(t.draftMs / t.tokens),
        accepted_per_round: round(acceptedPerRound),
        tokens_per_round: round(t.tokens / t.rounds),
        accepted_vs_path_token: round(acceptedPerRound / baseAccepted),
        // The tree's own gain, free of the trajectories' noise: its rounds against their path alone.
        paired_tree_vs_path: t.pairedPath > 0 ? round(t.pairedTree / t.pairedPath) : null,
        branch_taken_per_round: round(t.branchTaken / t.rounds),
        target_passes_per_token: round(t.rounds / t.tokens),
        target_row_tokens_per_round: round(t.rowTokens / t.rounds),
        draft_ms_per_round: round(t.draftMs / t.rounds),
        modelled_verify_ms_per_round: round(t.modelledVerifyMs / t.rounds),
        cpu_tokens_per_s: round((t.tokens / t.wallMs) * 1000),
        ...Object.fromEntries(RTTS.map((rtt) => [`modelled_tokens_per_s_rtt_${rtt}`, round((t.tokens / (t.draftMs + t.rounds * rtt + t.modelledVerifyMs)) * 1000)])),
        // c: the draft's ms per drafted path token over the modelled target step (one row of one token).
        draft_target_cost_ratio: round(t.draftMs / t.rounds / K / gpu.forwardMs(1, 256)),
      };
      records.push(record);
      options.log(
        `  T=${temperature} ${mode}: ${record.accepted_per_round} accepted/round (${record.accepted_vs_path_token}x path-token; paired with its own path ${record.paired_tree_vs_path ?? '-'}x), ${record.tokens_per_round} tokens/round, ` +
          `alternative taken ${record.branch_taken_per_round}/round, ${record.target_row_tokens_per_round} row tokens/round, modelled ${RTTS.map((rtt) => `${record[`modelled_tokens_per_s_rtt_${rtt}`]} tok/s @${rtt} ms`).join(', ')}, c ${record.draft_target_cost_ratio}`,
      );
    }
  }
  return records;
}

/** The origin's own verify code in process, telling `onRound` about every round it scores. */
function countingOrigin(model: TargetModel, vocabSize: number, maxPositions: number, onRound: (request: VerifyRequest, accepted: number) => Promise<void>): OriginClient {
  return {
    health: async () => ({ status: 'ok', id: 'in-process', model: 'target', vocab_size: vocabSize, max_positions: maxPositions }),
    async verify(request) {
      const result = await verifyDraft(model, request);
      await onRound(request, result.accepted);
      return { accepted: result.accepted, tokens: result.tokens, ...(result.path ? { path: result.path } : {}), origin: { id: 'in-process', forward_ms: result.forwardMs, cached_tokens: result.cachedTokens } };
    },
    generate() {
      throw new Error('the multipath benchmark only verifies');
    },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const quick = process.argv.includes('--quick');
  const records = await multipathSuite({ quick, log: (line) => console.log(line) });
  console.log(JSON.stringify(records, null, 1));
}
