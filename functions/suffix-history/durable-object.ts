import { DurableObject } from 'cloudflare:workers';
import type { Env } from '../env';
import { OutputLog, TENANT_HISTORY_BYTES, type HistoryPage } from './log';

/**
 * SuffixHistory: one tenant's recent outputs (token ids, newest last), the
 * history its suffix drafts match against (ARCHITECTURE.md: Prefix KV in
 * Durable Objects, README: Proposers and Predicted Outputs). One object per
 * tenant, named by its cache salt (the same salt that keys its prefix cache),
 * so no object ever holds two tenants' text; bounded by TENANT_HISTORY_BYTES,
 * oldest first out (./log.ts). A Durable Object runs one call at a time, so
 * appends from any number of isolates are numbered in one order; every
 * change is in the object's SQLite storage, so eviction or a restart of the
 * object forgets nothing. Isolates keep the index itself (./index.ts).
 */
export class SuffixHistory extends DurableObject<Env> {
  private readonly log: OutputLog;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.log = new OutputLog(ctx.storage.kv, TENANT_HISTORY_BYTES);
  }

  /** Keeps one completed output; its number (-1: empty, not kept). Throws a TypeError for anything but token ids. */
  async append(tokens: number[]): Promise<number> {
    return this.log.append(tokens);
  }

  /** The outputs numbered after `after` (-1 = all it holds), oldest first. */
  async recent(after = -1): Promise<HistoryPage> {
    return this.log.recent(after);
  }
}
