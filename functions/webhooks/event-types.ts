/**
 * The events a job sends to its webhook endpoint (functions/webhooks/events.ts).
 * A module of its own so request validation (functions/jobs/request.ts, which
 * Node unit tests import) needs nothing of the endpoint store.
 */
export const EVENT_TYPES = ['job.started', 'job.completed', 'job.failed', 'job.cancelled'] as const;
export type EventType = (typeof EVENT_TYPES)[number];
export const DEFAULT_EVENT_TYPES: EventType[] = ['job.completed', 'job.failed', 'job.cancelled'];
