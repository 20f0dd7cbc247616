import { beforeAll, describe, expect, it } from 'vitest';
import { proposerFor, type ProposerKind } from '../../functions/proposers';
import { SuffixIndex } from '../../functions/proposers/suffix';
import type { SpeculationPlan } from '../../functions/speculation/loop';
import { chiSquareTest } from '../stats';
import { DRAFT_DIR, loadFolderTokenizer } from '../support/models';
import { heldOutPrompts } from '../support/prompts';
import { exactPairs, greedy, loadHarness, plan, run, targetNext, type Harness, type ProposerFactory } from './harness';

/**
 * Losslessness of every training-free proposer, in process (./harness.ts: real
 * models, the origin's own verify code): greedy output identical to
 * target-only decoding, and sampled output distributed as target-only
 * sampling (chi-square over the first two tokens), for prompt lookup, suffix
 * matching (with a tenant history), the hybrid, and predictions that are
 * right, right until the middle, and wrong from the first token.
 */
let h: Harness;
let textPrompts: number[][];

beforeAll(async () => {
  h = await loadHarness();
  const tokenizer = await loadFolderTokenizer(DRAFT_DIR);
  textPrompts = heldOutPrompts(4, 300).map((p) => tokenizer.encode(p));
});

const idPrompts = [
  [11, 400, 93, 1200, 7, 88, 512],
  [300, 301, 302, 45, 46, 47, 48, 49],
];

/** A proposer kind as the pipeline builds it, with an optional prediction and tenant history. */
const kind =
  (k: ProposerKind, extra: { prediction?: (prompt: readonly number[]) => number[]; history?: SuffixIndex } = {}): ProposerFactory =>
  (hh, prompt) =>
    proposerFor(k, { lm: hh.draft.lm }, { qEntries: 32, promptLength: prompt.length, prediction: extra.prediction?.(prompt), history: extra.history ?? null });

const withMatch = (p: SpeculationPlan, maxMatchDraft = 16): SpeculationPlan => ({ ...p, maxMatchDraft });
const MAX = 40;

/** Target-only greedy output per prompt, for predictions built from it. */
const references = new Map<string, number[]>();
async function reference(prompt: number[]): Promise<number[]> {
  const key = prompt.join(',');
  if (!references.has(key)) references.set(key, (await run(h, prompt, MAX, greedy, plan('origin', { draftLength: 0 }))).tokens);
  return references.get(key)!;
}

/** Tokens no greedy output here contains (the vocabulary's far end), as wrong predictions. */
const junk = (n: number) => Array.from({ length: n }, (_, i) => 4000 + (i % 90));

describe('greedy output is identical to target-only decoding, whichever proposer drafts', () => {
  const cases: Array<{ name: string; plan: SpeculationPlan; factory: () => ProposerFactory; member: string; mustAccept: boolean }> = [
    { name: 'prompt lookup, lockstep', plan: withMatch(plan('lockstep', { draftLength: 3 })), factory: () => kind('prompt-lookup'), member: 'prompt-lookup', mustAccept: true },
    { name: 'prompt lookup, pipelined depth 3', plan: withMatch(plan('pipelined')), factory: () => kind('prompt-lookup'), member: 'prompt-lookup', mustAccept: true },
    { name: 'suffix, lockstep', plan: withMatch(plan('lockstep')), factory: () => kind('suffix'), member: 'suffix', mustAccept: true },
    { name: 'suffix with a tenant history, pipelined', plan: withMatch(plan('pipelined', { depth: 2 })), factory: () => kind('suffix', { history: historyOfReferences() }), member: 'suffix', mustAccept: true },
    { name: 'hybrid, lockstep k=4', plan: withMatch(plan('lockstep', { draftLength: 4 })), factory: () => kind('hybrid'), member: 'suffix', mustAccept: true },
    { name: 'hybrid, pipelined k=3 depth 2', plan: withMatch(plan('pipelined', { depth: 2 })), factory: () => kind('hybrid'), member: 'suffix', mustAccept: true },
    { name: 'hybrid, adaptive', plan: withMatch(plan('adaptive', { draftLength: 6 })), factory: () => kind('hybrid'), member: 'draft-model', mustAccept: true },
  ];
  /** Every reference output so far, as one tenant's history. */
  const historyOfReferences = () => {
    const index = new SuffixIndex(1 << 20);
    for (const output of references.values()) index.add(output);
    return index;
  };

  it.each(cases)('$name', async ({ plan: p, factory, member, mustAccept }) => {
    const prompts = [...idPrompts, ...textPrompts];
    for (const prompt of prompts) await reference(prompt);
    const make = factory();
    let drafted = 0;
    let accepted = 0;
    for (const prompt of prompts) {
      const speculative = await run(h, prompt, MAX, greedy, p, { proposer: make });
      expect(speculative.tokens, `prompt ${prompt.slice(0, 8)}`).toEqual(await reference(prompt));
      drafted += speculative.stats.proposers[member]?.drafted ?? 0;
      accepted += speculative.stats.proposers[member]?.accepted ?? 0;
    }
    expect(drafted).toBeGreaterThan(0);
    if (mustAccept) expect(accepted).toBeGreaterThan(0);
  });

  const predictions: Array<[string, (ref: number[]) => number[]]> = [
    ['entirely right', (ref) => ref],
    ['right until the middle', (ref) => [...ref.slice(0, MAX / 2), ...junk(MAX / 2)]],
    ['wrong from the first token', () => junk(MAX)],
  ];
  const proposerKinds: ProposerKind[] = ['draft-model', 'hybrid'];
  for (const [label, predict] of predictions) {
    for (const k of proposerKinds) {
      for (const mode of ['lockstep', 'pipelined'] as const) {
        it(`prediction ${label}, then ${k}, ${mode}`, async () => {
          const perRound: number[] = [];
          for (const prompt of [...idPrompts, ...textPrompts]) {
            const ref = await reference(prompt);
            const prediction = predict(ref);
            const result = await run(h, prompt, MAX, greedy, withMatch(plan(mode, { draftLength: 3, depth: 2 }), 32), { proposer: kind(k, { prediction: () => prediction }) });
            expect(result.tokens).toEqual(ref);
            const stats = result.stats.proposers.prediction;
            // Wrong from the first token: the prediction drafts the first round and is rejected at once.
            expect(stats?.drafted ?? 0).toBeGreaterThan(0);
            if (label === 'wrong from the first token') expect(stats.accepted).toBe(0);
            else perRound.push(stats.accepted / stats.rounds);
            if (label === 'entirely right') expect(result.stats.rounds).toBeLessThanOrEqual(MAX / 5);
          }
          if (perRound.length) console.log(`prediction ${label}, ${k}, ${mode}: accepted per prediction round ${perRound.map((x) => x.toFixed(1)).join(' ')}`);
        });
      }
    }
  }
});

describe('sampled output has the target-only distribution, whichever proposer drafts', () => {
  const sampling = { temperature: 1, top_k: 6, top_p: 1 };
  const samples = Number(process.env.LOSSLESS_SAMPLES ?? 2000);
  const prompt = [300, 301, 302, 45, 46, 47];

  /** Greedy path g1 g2 and runner-up tokens after the prompt (w1) and after g1 (w2): predictions and histories are built from them. */
  let path: { g1: number; g2: number; w1: number; w2: number };
  beforeAll(async () => {
    const p1 = await targetNext(h, prompt, sampling);
    const order1 = [...p1.keys()].sort((a, b) => p1[b] - p1[a]);
    const p2 = await targetNext(h, [...prompt, order1[0]], sampling);
    const order2 = [...p2.keys()].sort((a, b) => p2[b] - p2[a]);
    path = { g1: order1[0], g2: order2[0], w1: order1[1], w2: order2[1] };
  });

  const cases: Array<{ name: string; prompt: () => number[]; plan: SpeculationPlan; factory: () => ProposerFactory; member: string }> = [
    // The prompt repeats [45, 46, 47] followed by the greedy path: prompt lookup drafts it.
    { name: 'prompt lookup', prompt: () => [45, 46, 47, path.g1, path.g2, ...prompt], plan: withMatch(plan('lockstep', { draftLength: 2 }), 2), factory: () => kind('prompt-lookup'), member: 'prompt-lookup' },
    // The tenant's history has the prompt's tail followed by the greedy path.
    {
      name: 'suffix with a tenant history',
      prompt: () => prompt,
      plan: withMatch(plan('lockstep', { draftLength: 2 }), 2),
      factory: () => {
        const index = new SuffixIndex(1 << 16);
        index.add([300, 301, 302, 45, 46, 47, path.g1, path.g2, 9, 9]);
        return kind('suffix', { history: index });
      },
      member: 'suffix',
    },
    { name: 'prediction entirely right (greedy path)', prompt: () => prompt, plan: withMatch(plan('lockstep', { draftLength: 2 }), 2), factory: () => kind('draft-model', { prediction: () => [path.g1, path.g2] }), member: 'prediction' },
    { name: 'prediction right until the middle', prompt: () => prompt, plan: withMatch(plan('lockstep', { draftLength: 2 }), 2), factory: () => kind('draft-model', { prediction: () => [path.g1, path.w2] }), member: 'prediction' },
    { name: 'prediction wrong from the first token (runner-up)', prompt: () => prompt, plan: withMatch(plan('lockstep', { draftLength: 2 }), 2), factory: () => kind('draft-model', { prediction: () => [path.w1, path.g2] }), member: 'prediction' },
    // k = 1 with a 2-token prediction: the first block drafts 2, a pipelined successor may decide token 3.
    { name: 'hybrid + prediction right until the middle, pipelined', prompt: () => prompt, plan: withMatch(plan('pipelined', { draftLength: 1, depth: 2 }), 2), factory: () => kind('hybrid', { prediction: () => [path.g1, path.w2] }), member: 'prediction' },
  ];

  it.each(cases)('$name: first two tokens (chi-square)', async ({ name, prompt: promptOf, plan: p, factory, member }) => {
    const context = promptOf();
    const expected = await exactPairs(h, context, sampling);
    const counts = new Map<string, number>();
    let drafted = 0;
    let accepted = 0;
    let firstRejected = 0;
    const make = factory();
    for (let seed = 0; seed < samples; seed++) {
      const { tokens, stats } = await run(h, context, 3, { ...sampling, seed }, p, { proposer: make });
      const key = tokens.slice(0, 2).join(',');
      counts.set(key, (counts.get(key) ?? 0) + 1);
      const s = stats.proposers[member];
      drafted += s?.drafted ?? 0;
      accepted += s?.accepted ?? 0;
      if (s && s.accepted === 0) firstRejected++;
    }
    expect([...counts.keys()].filter((k) => !expected.has(k))).toEqual([]);
    const keys = [...expected.keys()];
    const result = chiSquareTest(
      keys.map((k) => counts.get(k) ?? 0),
      keys.map((k) => expected.get(k)! * samples),
    );
    console.log(`${name}: chi-square ${result.statistic.toFixed(1)} on ${result.df} df, p = ${result.pValue.toFixed(4)}; ${member} drafted ${drafted}, accepted ${accepted}, all rejected in ${firstRejected} runs`);
    // Both branches (acceptance and the residual after a rejection) must be exercised for the test to mean anything.
    expect(accepted).toBeGreaterThan(samples * 0.05);
    expect(firstRejected).toBeGreaterThan(samples * 0.05);
    expect(result.pValue).toBeGreaterThan(1e-3);
  });
});
