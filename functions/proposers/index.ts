import type { KvCache } from '../../shared/model';
import type { DraftEngine } from '../draft/engine';
import { DraftModelProposer } from './draft-model';
import { HybridProposer } from './hybrid';
import { PredictionProposer, REALIGN_MIN } from './prediction';
import { PROMPT_LOOKUP_DEFAULTS, PromptLookupProposer, type PromptLookupOptions } from './prompt-lookup';
import { SuffixProposer, type SuffixIndex } from './suffix';
import type { ProposerKind } from './kinds';
import type { Proposer } from './types';

export type { Proposer } from './types';
export { DEFAULT_MAX_MATCH_DRAFT, DEFAULT_PROPOSER, MATCH_DRAFT_FACTOR, MAX_VERIFY_DRAFT, PROPOSER_KINDS, type ProposerKind, type ProposerRequest } from './kinds';
export { isolateSuffixIndexes } from './suffix';
export { recordTenantOutput, tenantSuffixIndex, usesTenantHistory } from '../suffix-history';
export { predictionUsage } from './prediction';

export interface ProposerOptions {
  qEntries: number;
  prefix?: { tokens: readonly number[]; cache: KvCache } | null;
  /** Tokens of the prompt: where a prediction's output starts. */
  promptLength?: number;
  /** The caller's predicted output (token ids): tried first by every proposer kind. */
  prediction?: readonly number[];
  /** The caller's tenant's recent outputs (functions/proposers/suffix.ts), null = none yet. */
  history?: SuffixIndex | null;
  promptLookup?: PromptLookupOptions;
}

/**
 * The hybrid's suffix member wins a (greedy) round with a pattern of at least
 * this many tokens and at least this many drafts expected accepted (measured
 * on held-out code: README, Proposers and Predicted Outputs).
 */
export const HYBRID_MIN_MATCH = 3;
export const HYBRID_MIN_EXPECTED = 2;

/** The one place a proposer is chosen from configuration; a new way of drafting adds one line here. */
export function createProposer(kind: ProposerKind | 'prediction', engine: Pick<DraftEngine, 'lm'>, options: ProposerOptions): Proposer {
  switch (kind) {
    case 'draft-model':
      return new DraftModelProposer(engine.lm, options.qEntries, options.prefix);
    case 'prompt-lookup':
      return new PromptLookupProposer(options.promptLookup ?? PROMPT_LOOKUP_DEFAULTS);
    case 'suffix':
      return new SuffixProposer(options.history ?? null);
    case 'prediction':
      return new PredictionProposer(options.prediction ?? [], options.promptLength ?? 0);
    case 'hybrid':
      return new HybridProposer([{ matcher: new SuffixProposer(options.history ?? null), minMatchLength: HYBRID_MIN_MATCH, minExpectedAccepted: HYBRID_MIN_EXPECTED, sampled: false }], createProposer('draft-model', engine, options));
  }
}

/** `kind`, with the caller's prediction tried first when there is one (OpenAI's Predicted Outputs). */
export function proposerFor(kind: ProposerKind, engine: Pick<DraftEngine, 'lm'>, options: ProposerOptions): Proposer {
  const base = createProposer(kind, engine, options);
  if (!options.prediction?.length) return base;
  const prediction = createProposer('prediction', engine, options) as PredictionProposer;
  return new HybridProposer([{ matcher: prediction, minMatchLength: REALIGN_MIN, minExpectedAccepted: 1, sampled: true }], base);
}
