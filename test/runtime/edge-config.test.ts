import { describe, expect, it } from 'vitest';
import { edgeConfig } from '../../functions/config';
import type { Env } from '../../functions/env';
import { DEFAULT_PROPOSER, PROPOSER_KINDS } from '../../functions/proposers/kinds';

/** The vars every deployment sets (wrangler.toml [vars]), plus `vars`. */
const env = (vars: Record<string, string> = {}) => ({ ORIGIN_URL: 'http://127.0.0.1:8788', DRAFT_MODEL: 'edgespec-draft', ...vars }) as unknown as Env;

describe('edgeConfig: SPECULATION_PROPOSER', () => {
  it(`defaults to ${DEFAULT_PROPOSER} when unset`, () => {
    expect(edgeConfig(env()).defaultProposer).toBe(DEFAULT_PROPOSER);
    expect(PROPOSER_KINDS).toContain(DEFAULT_PROPOSER);
  });

  it.each(PROPOSER_KINDS)('takes %s', (kind) => {
    expect(edgeConfig(env({ SPECULATION_PROPOSER: kind })).defaultProposer).toBe(kind);
  });

  it.each(['prediction', 'ngram', 'Hybrid', ''])('refuses %j naming the var and the kinds', (value) => {
    expect(() => edgeConfig(env({ SPECULATION_PROPOSER: value }))).toThrow(/wrangler\.toml \[vars\].*SPECULATION_PROPOSER must be one of "draft-model", "prompt-lookup", "suffix", "hybrid"/s);
  });

  it('leaves the other speculation defaults alone', () => {
    const config = edgeConfig(env({ SPECULATION_PROPOSER: 'suffix', SPECULATION_MODE: 'adaptive' }));
    expect(config).toMatchObject({ defaultProposer: 'suffix', speculationMode: 'adaptive', draftLength: 4 });
  });
});
