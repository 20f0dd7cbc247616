import { ApiError } from '../../shared/errors';
import type { TenantLimits } from '../auth/tenants';
import type { EdgeConfig } from '../config';
import type { ProposerKind } from '../proposers/kinds';
import type { SpeculationPlan } from '../speculation/loop';

/** edgespec's `speculation` request object (functions/openai/request.ts), as every entry point passes it. */
export interface SpeculationRequest {
  draft_length?: number;
  method?: 'token' | 'block';
  mode?: SpeculationPlan['mode'];
  depth?: number;
  min_confidence?: number;
  branches?: number;
  branch_length?: number;
  placement?: 'auto' | 'edge' | 'origin';
  proposer?: ProposerKind;
}

/**
 * The request's `speculation` object over the configured defaults, within
 * the tenant's caps: asking for more than the cap is a 400 naming it; a
 * default above the cap is quietly lowered to it (the caller asked for nothing).
 * draft_length 0 means origin-only decoding.
 */
export function speculationPlan(spec: SpeculationRequest = {}, config: EdgeConfig, limits: TenantLimits): SpeculationPlan {
  const capped = (value: number | undefined, fallback: number, cap: number | null, param: string) => {
    if (value !== undefined && cap !== null && value > cap) {
      throw new ApiError(400, `Invalid value for '${param}': at most ${cap} for this API key's tenant (got ${value}).`, param, 'limit_exceeded');
    }
    return Math.min(value ?? fallback, cap ?? Infinity);
  };
  const draftLength = capped(spec.draft_length, config.draftLength, limits.maxDraftLength, 'speculation.draft_length');
  const depth = capped(spec.depth, config.pipelineDepth, limits.maxDepth, 'speculation.depth');
  const mode = draftLength === 0 ? 'origin' : (spec.mode ?? config.speculationMode);
  return {
    mode,
    method: spec.method ?? config.verifyMethod,
    draftLength: mode === 'origin' ? 0 : draftLength,
    depth,
    // Early stop is part of adaptive drafting; lockstep and pipelined draft k tokens unless asked.
    minConfidence: spec.min_confidence ?? (mode === 'adaptive' ? config.draftMinConfidence : 0),
    placement: spec.placement ?? config.speculationPlacement,
    branches: spec.branches ?? 0,
    branchLength: spec.branch_length ?? 1,
    // The origin drafts with its hybrid, or with the draft model alone when the request asked for that one.
    originProposer: (spec.proposer ?? config.defaultProposer) === 'draft-model' ? 'draft-model' : 'hybrid',
  };
}

/** max_tokens within the tenant's cap. */
export function checkMaxTokens(maxTokens: number, limits: TenantLimits, param = 'max_tokens'): void {
  if (limits.maxTokens !== null && maxTokens > limits.maxTokens) {
    throw new ApiError(400, `Invalid value for '${param}': at most ${limits.maxTokens} for this API key's tenant (got ${maxTokens}).`, param, 'limit_exceeded');
  }
}
