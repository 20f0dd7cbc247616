import { Template } from '@huggingface/jinja';

/**
 * A trigger's prompt template: Jinja (@huggingface/jinja, the implementation
 * chat templates use), rendered with the verified event:
 *
 *   payload      the event body as JSON (a form body as an object of strings)
 *   event        the event type (X-GitHub-Event, Stripe's `type`, Slack's event type, a Standard Webhooks `type`)
 *   delivery_id  the sender's delivery id
 *   trigger      {id, name}
 *
 * e.g. "Summarise this issue:\n{{ payload.issue.title }}\n{{ payload.issue.body }}".
 * Templates are bounded in size, and so is what they render to.
 */
export const MAX_TEMPLATE_CHARS = 16_384;
export const MAX_RENDERED_CHARS = 65_536;

/** Parse errors of a template, or null when it is valid. */
export function templateError(source: string): string | null {
  try {
    new Template(source);
    return null;
  } catch (err) {
    return (err as Error).message ?? String(err);
  }
}

export type Rendered = { ok: true; prompt: string } | { ok: false; message: string };

export function renderPrompt(source: string, context: { payload: unknown; event: string | null; delivery_id: string; trigger: { id: string; name: string | null } }): Rendered {
  let prompt: string;
  try {
    prompt = new Template(source).render(context as unknown as Record<string, unknown>);
  } catch (err) {
    return { ok: false, message: `The trigger's template failed to render: ${((err as Error).message ?? String(err)).slice(0, 300)}` };
  }
  if (!prompt.trim()) return { ok: false, message: "The trigger's template rendered an empty prompt for this event." };
  if (prompt.length > MAX_RENDERED_CHARS) return { ok: false, message: `The trigger's template rendered ${prompt.length} characters; at most ${MAX_RENDERED_CHARS} are allowed.` };
  return { ok: true, prompt };
}
