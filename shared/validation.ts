import type { z } from 'zod';
import { ApiError } from './errors';

/** Parse with zod; a failure becomes a 400 naming the first offending field, as OpenAI reports `param`. */
export function parseRequest<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const param = issue.path.length ? issue.path.join('.') : null;
  const message = param ? `Invalid value for '${param}': ${issue.message}` : issue.message;
  throw new ApiError(400, message, param, issue.code === 'unrecognized_keys' ? 'unknown_parameter' : 'invalid_value');
}

/** Read a JSON body; malformed JSON is the client's error, not ours. */
export async function readJsonBody(request: Request): Promise<unknown> {
  const text = await request.text();
  if (!text.trim()) throw new ApiError(400, 'Request body is empty; expected a JSON object.', null, 'invalid_json');
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'Request body is not valid JSON.', null, 'invalid_json');
  }
}
