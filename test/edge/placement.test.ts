import { describe, expect, it } from 'vitest';
import { complete, originUrl } from '../support/edge-client';
import { heldOutPrompts } from '../support/prompts';

/**
 * Draft placement through the whole stack: `speculation.placement: "origin"`
 * runs the draft next to the target (the test origin is started with
 * `--draft`), and the response says so — where drafts were made, the origin's
 * own rounds, and each token's source in the record. Greedy identity and the
 * chi-square test of every placement are in greedy-identity and
 * sampling-lossless.
 */
const [prompt] = heldOutPrompts(1, 400);

describe('draft placement', () => {
  it('the origin says it hosts a draft', async () => {
    const health = (await (await fetch(`${originUrl()}/health`)).json()) as { draft?: string };
    expect(health.draft).toBe('edgespec-draft');
  });

  it('placement "origin": drafted and verified next to the target, reported as such, same tokens as edge drafting', async () => {
    const body = { prompt, max_tokens: 40, temperature: 0, return_token_ids: true };
    const edge = await complete({ ...body, speculation: { draft_length: 4 } });
    const origin = await complete({ ...body, speculation: { draft_length: 4, placement: 'origin', record: true } });
    expect(origin.status).toBe(200);
    expect(origin.json.choices[0].token_ids).toEqual(edge.json.choices[0].token_ids);
    const spec = origin.json.speculation;
    expect(spec).toMatchObject({ placement: 'origin', mode: 'speculative', drafted: 0, accepted: 0 });
    expect(spec.origin_speculation.rounds).toBeGreaterThan(0);
    expect(spec.origin_speculation.tokens).toBe(origin.json.usage.completion_tokens);
    expect(spec.origin_speculation.accepted).toBeGreaterThan(0);
    // Target passes: the origin's rounds, fewer than tokens.
    expect(spec.target_passes).toBe(spec.origin_speculation.rounds);
    expect(spec.target_passes).toBeLessThan(origin.json.usage.completion_tokens);
    const sources = origin.json.speculation.record.tokens.map((t: any) => t.source);
    expect(sources).toContain('draft-accepted');
    expect(sources.every((s: string) => ['draft-accepted', 'suffix', 'target-correction', 'bonus'].includes(s))).toBe(true);
    expect(edge.json.speculation.placement).toBe('edge');
  });

  it('placement "auto": the isolate chooses from its measurements and says why, same tokens', async () => {
    const body = { prompt, max_tokens: 32, temperature: 0, return_token_ids: true };
    const reference = await complete({ ...body, speculation: { draft_length: 0 } });
    for (let i = 0; i < 3; i++) {
      const auto = await complete({ ...body, speculation: { mode: 'adaptive', placement: 'auto', draft_length: 6 } });
      expect(auto.status).toBe(200);
      expect(auto.json.choices[0].token_ids).toEqual(reference.json.choices[0].token_ids);
      const spec = auto.json.speculation;
      expect(['edge', 'origin', 'none']).toContain(spec.placement);
      // Each option's predicted time is in the reason, so a surprising choice can be read.
      expect(spec.placement_reason).toMatch(/predicted edge .* origin .* none \d+ ms for 32 tokens/);
      // At the origin every token comes from its stream (speculated, or decoded alone once its own controller handed over).
      if (spec.placement === 'origin') expect(spec.origin_tokens).toBe(auto.json.usage.completion_tokens);
      if (spec.placement === 'edge') expect(spec.drafted > 0 || spec.handover_at === 0).toBe(true);
    }
  });

  it('sends the prediction along: the origin drafts from it first', async () => {
    const first = await complete({ prompt, max_tokens: 32, temperature: 0, return_token_ids: true, speculation: { draft_length: 0 } });
    expect(first.json.speculation.placement).toBe('none');
    const withPrediction = await complete({
      prompt,
      max_tokens: 32,
      temperature: 0,
      return_token_ids: true,
      prediction: { type: 'content', content: first.json.choices[0].text },
      speculation: { draft_length: 4, placement: 'origin', record: true },
    });
    expect(withPrediction.json.choices[0].token_ids).toEqual(first.json.choices[0].token_ids);
    const sources = withPrediction.json.speculation.record.tokens.map((t: any) => t.source);
    expect(sources.filter((s: string) => s === 'prediction').length).toBeGreaterThanOrEqual(8);
    expect(withPrediction.json.usage.completion_tokens_details.accepted_prediction_tokens).toBeGreaterThan(0);
  });

  it('logprobs at either placement are the same numbers', async () => {
    const body = { prompt, max_tokens: 12, temperature: 0, logprobs: 2 };
    const edge = await complete({ ...body, speculation: { draft_length: 4 } });
    const origin = await complete({ ...body, speculation: { draft_length: 4, placement: 'origin' } });
    const a = edge.json.choices[0].logprobs.token_logprobs;
    const b = origin.json.choices[0].logprobs.token_logprobs;
    expect(b).toHaveLength(a.length);
    b.forEach((lp: number, i: number) => expect(lp).toBeCloseTo(a[i], 3));
  });
});
