import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { TextTokenizer } from '../../shared/tokenizer';
import { complete, createTenantKey, originGreedy } from '../support/edge-client';
import { DRAFT_DIR, loadFolderTokenizer, TARGET_DIR } from '../support/models';
import { heldOutPrompts } from '../support/prompts';

/**
 * Training-free proposers and Predicted Outputs through the whole stack
 * (workerd draft + origin verifier): greedy output stays identical to
 * origin-only decoding whichever proposer drafts and however wrong the
 * prediction; an entirely right prediction is mostly accepted in far fewer
 * verify rounds than tokens; the suffix index never drafts one tenant's text
 * for another.
 */
const eosIds = [JSON.parse(readFileSync(`${TARGET_DIR}/config.json`, 'utf8')).eos_token_id].flat() as number[];
const maxTokens = 48;
const prompts = heldOutPrompts(24, 300).slice(20);
let tokenizer: TextTokenizer;
/** Origin-only greedy output per prompt (token ids), and the prompt's ids. */
const references: Array<{ prompt: string; promptIds: number[]; output: number[] }> = [];

beforeAll(async () => {
  tokenizer = await loadFolderTokenizer(DRAFT_DIR);
  for (const prompt of prompts) {
    const promptIds = tokenizer.encode(prompt);
    references.push({ prompt, promptIds, output: await originGreedy(promptIds, maxTokens, eosIds) });
  }
});

/** A prediction text whose tokens no greedy continuation of code here starts with. */
const unrelated = '\u00a7\u00a7 Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.';

describe('greedy identity with predictions and the hybrid proposer (workerd)', () => {
  const predictions: Array<[string, (output: number[]) => string]> = [
    ['entirely right', (output) => tokenizer.decode(output)],
    ['right until the middle', (output) => tokenizer.decode(output.slice(0, output.length / 2)) + unrelated],
    ['wrong from the first token', () => unrelated],
  ];
  for (const [label, predict] of predictions) {
    it(`prediction ${label}`, async () => {
      const perRound: string[] = [];
      let accepted = 0;
      let rejected = 0;
      let emitted = 0;
      let rounds = 0;
      for (const { promptIds, output } of references) {
        const prediction = predict(output);
        const { status, json } = await complete({
          prompt: promptIds,
          max_tokens: maxTokens,
          temperature: 0,
          return_token_ids: true,
          prediction: { type: 'content', content: prediction },
          speculation: { mode: 'lockstep', draft_length: 4 },
        });
        expect(status, JSON.stringify(json)).toBe(200);
        expect(json.choices[0].token_ids).toEqual(output);
        const details = json.usage.completion_tokens_details;
        // OpenAI's meaning: prediction tokens that appeared in the output, and the rest of the prediction.
        expect(details.accepted_prediction_tokens + details.rejected_prediction_tokens).toBe(tokenizer.encode(prediction).length);
        const stats = json.speculation.proposers.prediction;
        expect(stats.drafted).toBeGreaterThan(0);
        perRound.push((stats.accepted / stats.rounds).toFixed(1));
        accepted += details.accepted_prediction_tokens;
        rejected += details.rejected_prediction_tokens;
        emitted += output.length;
        rounds += json.speculation.rounds;
        if (label === 'entirely right') {
          expect(details.accepted_prediction_tokens).toBeGreaterThanOrEqual(0.8 * output.length);
          expect(json.speculation.rounds).toBeLessThanOrEqual(output.length / 4);
        }
        if (label === 'wrong from the first token') {
          expect(stats.accepted).toBe(0);
          expect(details.accepted_prediction_tokens).toBe(0);
          // A wrong prediction costs about the one round it drafted (the draft model alone: no history-dependent choices).
          const speculation = { mode: 'lockstep', draft_length: 4, proposer: 'draft-model' };
          const baseline = await complete({ prompt: promptIds, max_tokens: maxTokens, temperature: 0, speculation });
          const wrong = await complete({ prompt: promptIds, max_tokens: maxTokens, temperature: 0, speculation, prediction: { type: 'content', content: prediction } });
          expect(wrong.json.speculation.rounds).toBeLessThanOrEqual(baseline.json.speculation.rounds + 2);
        }
      }
      console.log(`prediction ${label}: ${emitted} tokens in ${rounds} verify rounds; accepted per prediction round ${perRound.join(' ')}; accepted_prediction_tokens ${accepted}, rejected ${rejected}`);
      if (label === 'right until the middle') {
        expect(accepted).toBeGreaterThanOrEqual(0.4 * emitted);
        expect(rejected).toBeGreaterThan(0);
      }
    });
  }

  it('content as text parts is the same prediction as the string', async () => {
    const { promptIds, output } = references[0];
    const text = tokenizer.decode(output);
    const parts = [text.slice(0, 10), text.slice(10)].map((t) => ({ type: 'text', text: t }));
    const a = await complete({ prompt: promptIds, max_tokens: maxTokens, temperature: 0, return_token_ids: true, prediction: { type: 'content', content: text } });
    const b = await complete({ prompt: promptIds, max_tokens: maxTokens, temperature: 0, return_token_ids: true, prediction: { type: 'content', content: parts } });
    expect(b.status).toBe(200);
    expect(b.json.choices[0].token_ids).toEqual(output);
    expect(b.json.usage.completion_tokens_details).toEqual(a.json.usage.completion_tokens_details);
  });

  for (const speculation of [
    { proposer: 'hybrid', mode: 'lockstep', draft_length: 4 },
    { proposer: 'hybrid', mode: 'pipelined', draft_length: 3, depth: 2 },
    { proposer: 'prompt-lookup', mode: 'lockstep', draft_length: 4 },
    { proposer: 'suffix', mode: 'lockstep', draft_length: 4, max_match_draft: 16 },
  ]) {
    it(`${speculation.proposer}, ${speculation.mode}`, async () => {
      const totals: Record<string, { rounds: number; drafted: number; accepted: number }> = {};
      for (const { promptIds, output } of references) {
        const { status, json } = await complete({ prompt: promptIds, max_tokens: maxTokens, temperature: 0, return_token_ids: true, speculation });
        expect(status).toBe(200);
        expect(json.choices[0].token_ids).toEqual(output);
        for (const [name, s] of Object.entries(json.speculation.proposers as typeof totals)) {
          const t = (totals[name] ??= { rounds: 0, drafted: 0, accepted: 0 });
          t.rounds += s.rounds;
          t.drafted += s.drafted;
          t.accepted += s.accepted;
        }
        // Without a prediction, usage keeps edgespec's meaning: the speculation's drafts the target accepted / rejected.
        expect(json.usage.completion_tokens_details.accepted_prediction_tokens).toBe(json.speculation.accepted);
      }
      console.log(`${speculation.proposer} ${speculation.mode}: ${JSON.stringify(totals)}`);
      const matcher = speculation.proposer === 'hybrid' ? 'suffix' : speculation.proposer;
      expect(Object.keys(totals).every((name) => ['draft-model', matcher].includes(name))).toBe(true);
      if (speculation.proposer !== 'hybrid') expect(totals[matcher].drafted).toBeGreaterThan(0);
    });
  }

  it("match drafts stay within twice the tenant's max_draft_length", async () => {
    const capped = await createTenantKey({ max_draft_length: 2 });
    const { promptIds, output } = references[0];
    const tooLong = await complete({ prompt: promptIds, max_tokens: 8, speculation: { max_match_draft: 5 } }, capped.key);
    expect(tooLong.status).toBe(400);
    expect(tooLong.json.error.param).toBe('speculation.max_match_draft');
    // An entirely right prediction: every round drafts at most 2 × 2 tokens.
    const { status, json } = await complete(
      { prompt: promptIds, max_tokens: maxTokens, temperature: 0, return_token_ids: true, prediction: { type: 'content', content: tokenizer.decode(output) } },
      capped.key,
    );
    expect(status).toBe(200);
    expect(json.choices[0].token_ids).toEqual(output);
    const stats = json.speculation.proposers.prediction;
    expect(stats.drafted).toBeLessThanOrEqual(4 * stats.rounds);
    expect(stats.drafted).toBeGreaterThan(2 * stats.rounds);
  });

  it('refuses a malformed prediction, naming it', async () => {
    const { status, json } = await complete({ prompt: 'x', prediction: { type: 'text', content: 'y' } });
    expect(status).toBe(400);
    expect(json.error.param).toMatch(/^prediction/);
    const bad = await complete({ prompt: 'x', speculation: { proposer: 'ngram' } });
    expect(bad.status).toBe(400);
    expect(bad.json.error.param).toBe('speculation.proposer');
  });
});

describe("the suffix index is the tenant's own", () => {
  it("a tenant's earlier output drafts for that tenant only", async () => {
    const owner = await createTenantKey();
    const other = await createTenantKey();
    const { promptIds } = references[1];
    const first = await complete({ prompt: promptIds, max_tokens: 40, temperature: 0, return_token_ids: true, speculation: { proposer: 'draft-model' } }, owner.key);
    expect(first.status).toBe(200);
    const output: number[] = first.json.choices[0].token_ids;
    // A prompt that is a stretch of that output whose last 3 tokens occur nowhere earlier in it: only the history can match.
    let cut = 12;
    const repeats = (ids: number[]) => ids.slice(0, -1).some((_, i) => i >= 2 && ids[i] === ids.at(-1) && ids[i - 1] === ids.at(-2) && ids[i - 2] === ids.at(-3));
    while (cut < output.length - 4 && repeats(output.slice(0, cut))) cut++;
    const prompt = output.slice(0, cut);
    expect(repeats(prompt)).toBe(false);
    // max_tokens 2: exactly one verify round with one draft token.
    const body = { prompt, max_tokens: 2, temperature: 0, speculation: { proposer: 'suffix', draft_length: 4 } };
    const mine = await complete(body, owner.key);
    const theirs = await complete(body, other.key);
    expect(mine.status).toBe(200);
    expect(theirs.status).toBe(200);
    expect(mine.json.speculation.proposers.suffix.drafted).toBe(1);
    expect(theirs.json.speculation.proposers.suffix.drafted).toBe(0);
  });
});
