import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { generateText, streamText } from 'ai';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEdge, type EdgeService } from '../../scripts/stack';
import { loadChatTemplate, type ChatTemplate } from '../../shared/chat-template';
import { folderFiles } from '../../shared/model/node-files';
import type { TextTokenizer } from '../../shared/tokenizer';
import { apiKey, authHeaders, complete, edgeUrl, originGreedy, originUrl, sseData } from '../support/edge-client';
import { DRAFT_DIR, TARGET_DIR, loadFolderTokenizer } from '../support/models';

/**
 * POST /v1/chat/completions against the real stack (workerd + origin): the
 * official openai client and the Vercel AI SDK get the same greedy text,
 * streamed and not; the tokens are the target's own greedy decoding of the
 * rendered conversation; every field edgespec does not implement is a 400
 * naming it; a model folder without a chat template is a 400 saying so.
 */
async function chat(body: Record<string, unknown>, key: string = apiKey(), base: string = edgeUrl()): Promise<{ status: number; json: any; headers: Headers }> {
  const response = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: authHeaders(key), body: JSON.stringify(body) });
  return { status: response.status, json: await response.json(), headers: response.headers };
}

async function chatStream(body: Record<string, unknown>): Promise<{ chunks: any[]; events: string[] }> {
  const response = await fetch(`${edgeUrl()}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: JSON.stringify({ ...body, stream: true }) });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toContain('text/event-stream');
  const events = sseData(await response.text());
  return { events, chunks: events.slice(0, -1).map((e) => JSON.parse(e)) };
}

const system = 'You write JavaScript.';
const question = 'Write a function that adds two numbers.';
const conversation = [
  { role: 'system', content: system },
  { role: 'user', content: question },
];
const greedy = { messages: conversation, max_completion_tokens: 24, temperature: 0 };
const eosIds = [JSON.parse(await readFile(`${TARGET_DIR}/config.json`, 'utf8')).eos_token_id].flat() as number[];

let tokenizer: TextTokenizer;
let template: ChatTemplate;
beforeAll(async () => {
  tokenizer = await loadFolderTokenizer(DRAFT_DIR);
  template = (await loadChatTemplate(folderFiles(DRAFT_DIR)))!;
});

describe('chat completions: OpenAI shape', () => {
  it('answers a chat.completion with the assistant message, usage details and speculation stats', async () => {
    const { status, json } = await chat(greedy);
    expect(status).toBe(200);
    expect(json).toMatchObject({ object: 'chat.completion', model: 'edgespec' });
    expect(json.id).toMatch(/^chatcmpl-[0-9a-f]{32}$/);
    expect(json.choices).toHaveLength(1);
    const [choice] = json.choices;
    expect(choice).toMatchObject({ index: 0, logprobs: null, message: { role: 'assistant' } });
    expect(Object.keys(choice.message).sort()).toEqual(['content', 'role']);
    expect(choice.message.content.length).toBeGreaterThan(0);
    expect(['stop', 'length']).toContain(choice.finish_reason);
    const { usage, speculation } = json;
    expect(usage.prompt_tokens).toBe(tokenizer.encode(template.render(conversation)).length);
    expect(usage.total_tokens).toBe(usage.prompt_tokens + usage.completion_tokens);
    expect(usage.completion_tokens).toBeLessThanOrEqual(24);
    expect(usage.prompt_tokens_details).toHaveProperty('cached_tokens');
    expect(usage.completion_tokens_details.accepted_prediction_tokens).toBe(speculation.accepted);
    expect(usage.completion_tokens_details.rejected_prediction_tokens).toBe(speculation.drafted - speculation.accepted);
    expect(speculation).toMatchObject({ mode: 'speculative', origin: 'origin-0' });
    expect(speculation.rounds).toBeGreaterThan(0);
  });

  it('streams chat.completion.chunk: the role first, then content deltas, the finish reason last, then [DONE]', async () => {
    const whole = (await chat(greedy)).json;
    const { events, chunks } = await chatStream(greedy);
    expect(events.at(-1)).toBe('[DONE]');
    for (const chunk of chunks) expect(chunk).toMatchObject({ object: 'chat.completion.chunk', id: chunks[0].id, model: 'edgespec' });
    expect(chunks[0].id).toMatch(/^chatcmpl-/);
    expect(chunks[0].choices).toEqual([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
    const middle = chunks.slice(1, -1);
    expect(middle.length).toBeGreaterThan(0);
    for (const chunk of middle) {
      expect(Object.keys(chunk.choices[0].delta)).toEqual(['content']);
      expect(chunk.choices[0].finish_reason).toBeNull();
    }
    expect(middle.map((c) => c.choices[0].delta.content).join('')).toBe(whole.choices[0].message.content);
    const last = chunks.at(-1);
    expect(last.choices).toEqual([{ index: 0, delta: {}, logprobs: null, finish_reason: whole.choices[0].finish_reason }]);
    expect(last.usage.completion_tokens).toBe(whole.usage.completion_tokens);
    // Without stream_options.include_usage there is no usage-only chunk.
    expect(chunks.filter((c) => c.choices.length === 0)).toHaveLength(0);
  });

  it('sends a final usage chunk with no choices for stream_options.include_usage', async () => {
    const whole = (await chat(greedy)).json;
    const { events, chunks } = await chatStream({ ...greedy, stream_options: { include_usage: true } });
    expect(events.at(-1)).toBe('[DONE]');
    const usageChunk = chunks.at(-1);
    expect(usageChunk).toMatchObject({ object: 'chat.completion.chunk', id: chunks[0].id, choices: [] });
    expect(usageChunk.usage.completion_tokens).toBe(whole.usage.completion_tokens);
    expect(usageChunk.usage.prompt_tokens).toBe(whole.usage.prompt_tokens);
    expect(usageChunk.usage).toMatchObject({ prompt_tokens_details: { cached_tokens: expect.any(Number) }, completion_tokens_details: expect.any(Object) });
    expect(usageChunk.usage.total_tokens).toBe(usageChunk.usage.prompt_tokens + usageChunk.usage.completion_tokens);
    expect(chunks.at(-2).choices[0].finish_reason).not.toBeNull();
  });

  it('works with the official openai client, streamed and not, with the same greedy text', async () => {
    const client = new OpenAI({ baseURL: `${edgeUrl()}/v1`, apiKey: apiKey() });
    const params = { model: 'edgespec', messages: [{ role: 'system' as const, content: system }, { role: 'user' as const, content: question }], max_completion_tokens: 24, temperature: 0 };
    const completion = await client.chat.completions.create(params);
    const text = completion.choices[0].message.content ?? '';
    expect(text.length).toBeGreaterThan(0);
    expect(text).toBe((await chat(greedy)).json.choices[0].message.content);
    let streamed = '';
    let role: string | undefined;
    let usage: OpenAI.CompletionUsage | undefined | null;
    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    for await (const chunk of stream) {
      role ??= chunk.choices[0]?.delta.role;
      streamed += chunk.choices[0]?.delta.content ?? '';
      if (chunk.choices.length === 0) usage = chunk.usage;
    }
    expect(role).toBe('assistant');
    expect(streamed).toBe(text);
    expect(usage?.completion_tokens).toBe(completion.usage?.completion_tokens);
    await expect(client.chat.completions.create({ ...params, model: 'gpt-9' })).rejects.toMatchObject({ status: 404 });
    await expect(client.chat.completions.create({ ...params, tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] })).rejects.toMatchObject({ status: 400, param: 'tools' });
  });

  it('works with the Vercel AI SDK (generateText, streamText) through createOpenAICompatible, with the same text', async () => {
    const edgespec = createOpenAICompatible({ name: 'edgespec', baseURL: `${edgeUrl()}/v1`, apiKey: apiKey(), includeUsage: true });
    const expected = (await chat(greedy)).json;
    const generated = await generateText({ model: edgespec('edgespec'), system, prompt: question, temperature: 0, maxOutputTokens: 24 });
    expect(generated.text).toBe(expected.choices[0].message.content);
    expect(generated.usage.outputTokens).toBe(expected.usage.completion_tokens);
    expect(generated.usage.inputTokens).toBe(expected.usage.prompt_tokens);
    expect(generated.providerMetadata?.edgespec).toHaveProperty('acceptedPredictionTokens');
    const errors: unknown[] = [];
    const streamed = streamText({ model: edgespec('edgespec'), system, prompt: question, temperature: 0, maxOutputTokens: 24, onError: ({ error }) => void errors.push(error) });
    let text = '';
    for await (const delta of streamed.textStream) text += delta;
    expect(errors).toEqual([]);
    expect(text).toBe(expected.choices[0].message.content);
    expect((await streamed.usage).outputTokens).toBe(expected.usage.completion_tokens);
  });
});

describe('chat completions: the target decides every token', () => {
  const conversations = [
    conversation,
    [{ role: 'user', content: 'function add(a, b) {' }],
    [
      { role: 'developer', content: 'Answer in TypeScript.' },
      { role: 'user', content: [{ type: 'text', text: 'Parse a number.' }, { type: 'text', text: 'Return NaN on failure.' }], name: 'ana' },
      { role: 'assistant', content: 'export function parse(s: string): number {' },
      { role: 'user', content: 'Go on.' },
    ],
  ];

  it('tokenizes the rendered conversation and generates the origin’s own greedy decoding of it', async () => {
    for (const messages of conversations) {
      const { status, json } = await chat({ messages, max_completion_tokens: 32, temperature: 0, return_token_ids: true });
      expect(status).toBe(200);
      const rendered = template.render(
        messages.map((m: any) => ({ ...m, role: m.role === 'developer' ? 'system' : m.role, content: typeof m.content === 'string' ? m.content : m.content.map((p: any) => p.text).join('\n') })),
      );
      expect(json.prompt_token_ids).toEqual(tokenizer.encode(rendered));
      const tokens = json.choices[0].token_ids;
      expect(tokens).toEqual(await originGreedy(json.prompt_token_ids, 32, eosIds));
      expect(json.choices[0].message.content).toBe(tokenizer.decode(tokens));
      // And /v1/completions of the same ids, and of the rendered text (its <|endoftext|> is the token, not characters), agree.
      for (const prompt of [json.prompt_token_ids, rendered]) {
        const completion = (await complete({ prompt, max_tokens: 32, temperature: 0, return_token_ids: true })).json;
        expect(completion.choices[0].prompt_token_ids).toEqual(json.prompt_token_ids);
        expect(completion.choices[0].token_ids).toEqual(tokens);
        expect(completion.choices[0].text).toBe(json.choices[0].message.content);
      }
    }
  });

  it('streams the same tokens with return_token_ids: prompt ids in the opening chunk, ids with each delta', async () => {
    const whole = (await chat({ ...greedy, return_token_ids: true })).json;
    const { chunks } = await chatStream({ ...greedy, return_token_ids: true });
    expect(chunks[0].prompt_token_ids).toEqual(whole.prompt_token_ids);
    expect(chunks.flatMap((c) => c.choices[0]?.token_ids ?? [])).toEqual(whole.choices[0].token_ids);
  });

  it('gives the same greedy text origin-only (draft_length 0) and with a predicted output', async () => {
    const speculative = (await chat({ ...greedy, return_token_ids: true })).json;
    const originOnly = (await chat({ ...greedy, return_token_ids: true, speculation: { draft_length: 0 } })).json;
    expect(originOnly.speculation.mode).toBe('origin');
    expect(originOnly.choices[0].token_ids).toEqual(speculative.choices[0].token_ids);
    const answer = speculative.choices[0].message.content;
    for (const content of [answer, [{ type: 'text', text: answer }], `${answer.slice(0, 10)} something else entirely`]) {
      const predicted = await chat({ ...greedy, return_token_ids: true, prediction: { type: 'content', content } });
      expect(predicted.status).toBe(200);
      expect(predicted.json.choices[0].token_ids).toEqual(speculative.choices[0].token_ids);
    }
  });

  it('stops at a stop string without emitting it, and takes max_completion_tokens over max_tokens', async () => {
    const base = (await chat({ ...greedy, max_completion_tokens: 32 })).json.choices[0].message.content as string;
    const stop = base.slice(Math.floor(base.length / 2), Math.floor(base.length / 2) + 2);
    expect(stop.length).toBe(2);
    const stopped = (await chat({ ...greedy, max_completion_tokens: 32, stop })).json;
    expect(stopped.choices[0]).toMatchObject({ finish_reason: 'stop', message: { content: base.slice(0, base.indexOf(stop)) } });
    const both = (await chat({ messages: conversation, temperature: 0, max_completion_tokens: 3, max_tokens: 20 })).json;
    expect(both.usage.completion_tokens).toBeLessThanOrEqual(3);
    const legacy = (await chat({ messages: conversation, temperature: 0, max_tokens: 5 })).json;
    expect(legacy.usage.completion_tokens).toBeLessThanOrEqual(5);
    expect(legacy.choices[0].finish_reason === 'length').toBe(legacy.usage.completion_tokens === 5);
  });

  it('generates at most 256 tokens when the request sets no budget', async () => {
    const messages = [{ role: 'user', content: 'for (let i = 0; i < 10; i++) {' }];
    const unset = await chat({ messages, temperature: 0, return_token_ids: true });
    expect(unset.status).toBe(200);
    const capped = (await chat({ messages, temperature: 0, max_completion_tokens: 256, return_token_ids: true })).json;
    expect(unset.json.choices[0].token_ids).toEqual(capped.choices[0].token_ids);
    // Greedy decoding of this prompt does not end by itself within 256 tokens: the default is what stops it.
    expect(unset.json.usage.completion_tokens).toBe(256);
    expect(unset.json.choices[0].finish_reason).toBe('length');
  });
});

const ok = { messages: [{ role: 'user', content: 'x = 1' }], max_completion_tokens: 2, temperature: 0 };
const user = (content: unknown) => ({ messages: [{ role: 'user', content }] });

/** Every field edgespec does not implement, with a value it must refuse, the `param` the 400 must name, and a word its message must contain. */
const refused: Array<[string, Record<string, unknown>, string | null, RegExp]> = [
  ['tools', { tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }, 'tools', /tools/],
  ['tool_choice', { tool_choice: 'auto' }, 'tool_choice', /tool_choice/],
  ['functions', { functions: [{ name: 'f', parameters: {} }] }, 'functions', /functions/],
  ['function_call', { function_call: 'auto' }, 'function_call', /function_call/],
  ['parallel_tool_calls', { parallel_tool_calls: true }, 'parallel_tool_calls', /parallel_tool_calls/],
  ['image content part', user([{ type: 'text', text: 'what is this?' }, { type: 'image_url', image_url: { url: 'https://example.com/a.png' } }]), 'messages.0.content.1.type', /image_url/],
  ['audio content part', user([{ type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } }]), 'messages.0.content.0.type', /input_audio/],
  ['file content part', user([{ type: 'file', file: { file_id: 'file-1' } }]), 'messages.0.content.0.type', /file/],
  ['audio output', { audio: { voice: 'alloy', format: 'wav' } }, 'audio', /audio/],
  ['modalities with audio', { modalities: ['text', 'audio'] }, 'modalities.1', /text/],
  ['n above 1', { n: 2 }, 'n', /n must be 1/],
  ['response_format json_object', { response_format: { type: 'json_object' } }, 'response_format.type', /response_format/],
  ['response_format json_schema', { response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {} } } }, 'response_format.type', /response_format/],
  ['logprobs not a boolean', { logprobs: 5 }, 'logprobs', /boolean/],
  ['top_logprobs without logprobs', { top_logprobs: 5 }, 'top_logprobs', /requires logprobs: true/],
  ['top_logprobs above 20', { logprobs: true, top_logprobs: 21 }, 'top_logprobs', /top_logprobs/],
  ['logit_bias', { logit_bias: { '11': 5 } }, 'logit_bias', /logit_bias/],
  ['frequency_penalty', { frequency_penalty: 0.5 }, 'frequency_penalty', /frequency_penalty/],
  ['presence_penalty', { presence_penalty: -1 }, 'presence_penalty', /presence_penalty/],
  ['web_search_options', { web_search_options: {} }, 'web_search_options', /web_search_options/],
  ['tool message', { messages: [{ role: 'tool', content: 'x', tool_call_id: 'call_1' }] }, 'messages.0.role', /tool/],
  ['function message', { messages: [{ role: 'function', content: 'x', name: 'f' }] }, 'messages.0.role', /function/],
  ['assistant tool_calls', { messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{}' } }] }] }, 'messages.1.tool_calls', /tool_calls/],
  ['unknown field', { frobnicate: true }, null, /frobnicate/],
  ['unknown OpenAI field (store)', { store: true }, null, /store/],
  ['messages missing', { messages: undefined }, 'messages', /messages/],
  ['messages empty', { messages: [] }, 'messages', /messages/],
  ['content empty parts', user([]), 'messages.0.content', /content/],
  ['content a number', user(5), 'messages.0.content', /content/],
  ['max_completion_tokens zero', { max_completion_tokens: 0 }, 'max_completion_tokens', /max_completion_tokens/],
  ['max_tokens huge', { max_completion_tokens: undefined, max_tokens: 10_000_000 }, 'max_tokens', /max_tokens/],
  ['prediction of another type', { prediction: { type: 'text', content: 'x' } }, 'prediction.type', /prediction/],
  ['temperature above 2', { temperature: 2.5 }, 'temperature', /temperature/],
  ['speculation.draft_length too large', { speculation: { draft_length: 99 } }, 'speculation.draft_length', /draft_length/],
];

describe('chat completions: refused, never ignored', () => {
  it.each(refused)('%s', async (_name, override, param, words) => {
    const { status, json } = await chat({ ...ok, ...override });
    expect(status).toBe(400);
    expect(Object.keys(json)).toEqual(['error']);
    expect(json.error.type).toBe('invalid_request_error');
    if (param === null) expect(json.error.param).toBeNull();
    else expect(json.error.param).toBe(param);
    expect(json.error.message).toMatch(words);
  });

  it('accepts the neutral value of every refused field, and the fields it implements', async () => {
    const neutral = {
      ...ok,
      messages: [{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: 'x = 1' }], name: 'ana' }],
      n: 1, logprobs: false, top_logprobs: 0, logit_bias: {}, response_format: { type: 'text' }, modalities: ['text'], tools: [], tool_choice: 'none',
      functions: [], function_call: 'none', frequency_penalty: 0, presence_penalty: 0, audio: null, parallel_tool_calls: null, web_search_options: null,
      user: 'user-1', seed: 7, top_p: 0.9, top_k: 40, stop: ['\n\n'], fallback: 'draft', speculation: { draft_length: 2 }, model: 'edgespec', stream: false,
    };
    const { status, json } = await chat(neutral);
    expect(status, JSON.stringify(json)).toBe(200);
    expect(json.object).toBe('chat.completion');
  });

  it('answers 404 for another model and 401 without a key', async () => {
    const other = await chat({ ...ok, model: 'gpt-4o' });
    expect(other.status).toBe(404);
    expect(other.json.error).toMatchObject({ param: 'model', code: 'model_not_found' });
    const anonymous = await fetch(`${edgeUrl()}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ok) });
    expect(anonymous.status).toBe(401);
  });

  it('answers 413 for a conversation over the context, by bytes before tokenizing and by tokens after', async () => {
    const started = Date.now();
    const bytes = await chat({ ...ok, messages: [{ role: 'user', content: ' '.repeat(900_000) }] });
    expect(bytes.status).toBe(413);
    expect(bytes.json.error).toMatchObject({ type: 'invalid_request_error', code: 'context_length_exceeded', param: 'messages' });
    expect(bytes.json.error.message).toMatch(/more than \d+ bytes/);
    expect(Date.now() - started).toBeLessThan(2_000);
    const tokens = await chat({ ...ok, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'a + b; '.repeat(2000) }] });
    expect(tokens.status).toBe(413);
    expect(tokens.json.error).toMatchObject({ code: 'context_length_exceeded', param: 'messages' });
    expect(tokens.json.error.message).toMatch(/maximum context length is \d+ tokens; the prompt has \d+ tokens/);
    // Like completions.
    expect((await complete({ prompt: 'a + b; '.repeat(2000), max_tokens: 2 })).status).toBe(413);
  });
});

describe('chat completions on a model without a chat template', () => {
  // Another edge on the shared origin, whose draft folder is the shipped one minus `chat_template`.
  const port = Number(process.env.TEST_CHAT_EDGE_PORT ?? 21791);
  let dir: string;
  let edge: EdgeService;
  beforeAll(async () => {
    dir = join(await mkdtemp(join(tmpdir(), 'edgespec-chat-')), 'edgespec-draft-no-chat-template');
    await cp(DRAFT_DIR, dir, { recursive: true });
    const config = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8'));
    delete config.chat_template;
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2));
    edge = await startEdge({ port, originUrl: originUrl(), draftDir: dir, persistTo: `.wrangler/test-state-chat-${port}`, tenant: { name: `chat-${Date.now()}` } });
  });
  afterAll(async () => {
    await edge?.stop();
    if (dir) await rm(join(dir, '..'), { recursive: true, force: true });
  });

  it('refuses chat with 400 chat_template_missing and still serves completions', async () => {
    const { status, json } = await chat(ok, edge.apiKey, edge.url);
    expect(status).toBe(400);
    expect(json.error).toMatchObject({ type: 'invalid_request_error', code: 'chat_template_missing', param: 'messages' });
    expect(json.error.message).toMatch(/no chat template/);
    const completion = await fetch(`${edge.url}/v1/completions`, { method: 'POST', headers: authHeaders(edge.apiKey), body: JSON.stringify({ prompt: 'x = 1', max_tokens: 2 }) });
    expect(completion.status).toBe(200);
  });
});
