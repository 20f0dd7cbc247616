import type { Context } from 'hono';
import type { RequestIdVariables } from 'hono/request-id';
import type { Caller } from './auth/tenants';
import type { EdgeConfig } from './config';
import type { DraftEngine } from './draft/engine';
import type { Env } from './env';

/**
 * What middleware puts on a request before a route sees it (functions/middleware):
 * the parsed configuration, the authenticated caller, the isolate's draft engine.
 */
export interface EdgeVariables extends RequestIdVariables {
  config: EdgeConfig;
  caller: Caller;
  draftEngine: DraftEngine;
}

export type EdgeEnv = { Bindings: Env; Variables: EdgeVariables };
export type EdgeContext = Context<EdgeEnv>;
