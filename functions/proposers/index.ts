import type { KvCache } from '../../shared/model';
import type { DraftEngine } from '../draft/engine';
import { DraftModelProposer } from './draft-model';
import type { Proposer } from './types';

export type { Proposer } from './types';

/** The one place a proposer is chosen from configuration; a new way of drafting adds one line here. */
export function createProposer(kind: 'draft-model', engine: DraftEngine, options: { qEntries: number; prefix?: { tokens: readonly number[]; cache: KvCache } | null }): Proposer {
  switch (kind) {
    case 'draft-model':
      return new DraftModelProposer(engine.lm, options.qEntries, options.prefix);
  }
}
