/** `speculation.proposer`: how a round's draft is made (README: Proposers and Predicted Outputs). */
export const PROPOSER_KINDS = ['draft-model', 'prompt-lookup', 'suffix', 'hybrid'] as const;
export type ProposerKind = (typeof PROPOSER_KINDS)[number];

/**
 * The default of the `SPECULATION_PROPOSER` var (functions/config.ts:
 * `config.defaultProposer`), the proposer of a request that names none.
 */
export const DEFAULT_PROPOSER: ProposerKind = 'hybrid';

/**
 * Match drafts (prompt lookup, suffix, prediction) cost no model step, so they
 * may be longer than k: a round's match budget starts at MATCH_DRAFT_FACTOR·k,
 * doubles after each fully accepted match round up to `max_match_draft`
 * (default DEFAULT_MAX_MATCH_DRAFT; a tenant with a `max_draft_length` cap C
 * gets at most MATCH_DRAFT_FACTOR·C), and falls back after a rejection.
 */
export const MATCH_DRAFT_FACTOR = 2;
export const DEFAULT_MAX_MATCH_DRAFT = 32;
/** The verify protocol's limit (shared/protocol.ts: draft ≤ 64). */
export const MAX_VERIFY_DRAFT = 64;

/** The `speculation` fields that choose and bound proposers (functions/openai/request.ts), as every entry point passes them. */
export interface ProposerRequest {
  proposer?: ProposerKind;
  max_match_draft?: number;
  prompt_lookup_min?: number;
  prompt_lookup_max?: number;
}
