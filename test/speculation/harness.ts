import type { Proposer } from '../../functions/proposers';
import { DraftModelProposer } from '../../functions/proposers/draft-model';
import { LinkEstimator } from '../../functions/speculation/controller';
import { decode, type GenerationInput, type SpeculationPlan } from '../../functions/speculation/loop';
import { newStats } from '../../functions/speculation/stats';
import type { OriginClient } from '../../functions/upstream/client';
import { generateTokens } from '../../origin/generate';
import { speculateTokens } from '../../origin/speculate';
import { TargetModel } from '../../origin/target';
import { verifyDraft } from '../../origin/verify';
import type { LoadedModel } from '../../shared/model';
import type { GenerateEvent } from '../../shared/protocol';
import { processLogits } from '../../shared/sampling';
import { DRAFT_DIR, loadNodeModel, TARGET_DIR } from '../support/models';

/**
 * The speculation loop in process: the real draft and target models, the
 * origin's own verify and generate code, no HTTP. Shared by the modes and
 * proposer losslessness tests.
 */
export interface Harness {
  draft: LoadedModel;
  target: LoadedModel;
  origin: OriginClient;
  /** Verify calls the origin answered (every round, discarded pipelined ones included). */
  verifyCalls: number;
}

export async function loadHarness(): Promise<Harness> {
  const [draft, target] = await Promise.all([loadNodeModel(DRAFT_DIR, 'quantized'), loadNodeModel(TARGET_DIR)]);
  const model = new TargetModel(target.lm);
  const harness: Harness = {
    draft,
    target,
    verifyCalls: 0,
    origin: {
      health: async () => ({ status: 'ok', id: 'in-process', model: 'target', vocab_size: target.config.vocabSize, max_positions: target.config.maxPositions }),
      async verify(request) {
        harness.verifyCalls++;
        const result = await verifyDraft(model, request);
        return { accepted: result.accepted, tokens: result.tokens, ...(result.path ? { path: result.path } : {}), origin: { id: 'in-process', forward_ms: result.forwardMs, cached_tokens: result.cachedTokens } };
      },
      async *generate(request) {
        // With `speculate`, the origin's own speculation next to the target (origin/speculate.ts), as an origin started with --draft;
        // in lockstep, so a switch to it is exercised every time (its own adaptive hand-over: test/origin/speculate.test.ts).
        const events = request.speculate ? speculateTokens(model, draft.lm, { ...request, speculate: { ...request.speculate, adaptive: false } }) : generateTokens(model, request);
        for await (const event of events) yield event as GenerateEvent;
      },
    },
  };
  return harness;
}

export type ProposerFactory = (h: Harness, prompt: readonly number[]) => Proposer;
export const draftModel: ProposerFactory = (h) => new DraftModelProposer(h.draft.lm, 32);

export async function run(
  h: Harness,
  prompt: number[],
  maxTokens: number,
  sampling: GenerationInput['sampling'],
  plan: SpeculationPlan,
  options: { proposer?: ProposerFactory; link?: LinkEstimator; verifyDelayMs?: number } = {},
) {
  const input: GenerationInput = { prompt, maxTokens, sampling, stopTokenIds: new Set(), maxPositions: h.target.config.maxPositions };
  const stats = newStats(plan.mode, plan.draftLength, plan.method);
  const tokens: number[] = [];
  let made: Proposer | null = null;
  const factory = options.proposer ?? draftModel;
  const origin = options.verifyDelayMs ? delayedVerify(h.origin, options.verifyDelayMs) : h.origin;
  const rounds = decode(input, plan, () => (made = factory(h, prompt)), origin, stats, undefined, options.link ?? new LinkEstimator());
  for await (const piece of rounds) tokens.push(...piece);
  return { tokens, stats, proposer: made as Proposer | null };
}

/** `origin` whose verify answers arrive `ms` after they are ready, as over a link. */
function delayedVerify(origin: OriginClient, ms: number): OriginClient {
  return {
    ...origin,
    async verify(request, signal) {
      const reply = await origin.verify(request, signal);
      await new Promise((resolve) => setTimeout(resolve, ms));
      return reply;
    },
  };
}

export const plan = (mode: SpeculationPlan['mode'], extra: Partial<SpeculationPlan> = {}): SpeculationPlan => ({ mode, method: 'token', draftLength: 3, depth: 3, minConfidence: 0, ...extra });
export const greedy = { temperature: 0, top_p: 1, top_k: 0, seed: 0 };

/** Exact target-only distribution of the first two tokens after `prompt` under `sampling`. */
export async function exactPairs(h: Harness, prompt: number[], sampling: { temperature: number; top_k: number; top_p: number }): Promise<Map<string, number>> {
  const { target } = h;
  const vocab = target.config.vocabSize;
  const expected = new Map<string, number>();
  const r1 = await target.lm.forward(prompt, target.lm.emptyCache());
  const p1 = processLogits(r1.logits.subarray((r1.rows - 1) * vocab), sampling);
  for (let t1 = 0; t1 < vocab; t1++) {
    if (p1[t1] === 0) continue;
    const r2 = await target.lm.forward([t1], r1.cache);
    const p2 = processLogits(r2.logits, sampling);
    for (let t2 = 0; t2 < vocab; t2++) if (p2[t2] > 0) expected.set(`${t1},${t2}`, p1[t1] * p2[t2]);
  }
  return expected;
}

/** The target's processed next-token distribution after `context`. */
export async function targetNext(h: Harness, context: number[], sampling: { temperature: number; top_k: number; top_p: number }): Promise<Float64Array> {
  const vocab = h.target.config.vocabSize;
  const r = await h.target.lm.forward(context, h.target.lm.emptyCache());
  return processLogits(r.logits.subarray((r.rows - 1) * vocab), sampling);
}
