import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TenantLimits } from '../../functions/auth/tenants';
import type { DraftEngine } from '../../functions/draft/engine';
import { chatMaxTokens, chatPromptTokens, chatRequestSchema } from '../../functions/openai/chat-request';
import { ChatTemplate, ChatTemplateError, chatTemplateFromConfig, loadChatTemplate } from '../../shared/chat-template';
import { isApiError } from '../../shared/errors';
import { folderFiles } from '../../shared/model/node-files';
import type { TextTokenizer } from '../../shared/tokenizer';
import { parseRequest } from '../../shared/validation';
import { DRAFT_DIR, TARGET_DIR, loadFolderTokenizer } from '../support/models';

const FIXTURES = 'test/fixtures/chat-templates';

const conversation = [
  { role: 'system', content: 'You write JavaScript.' },
  { role: 'user', content: 'Add two numbers.' },
  { role: 'assistant', content: 'function add(a, b) {\n  return a + b;\n}' },
  { role: 'user', content: 'Now subtract.', name: 'ana' },
];

/** The shipped template's definition: `role[ (name)]:\n` + content + <|endoftext|> per message, then `assistant:\n`. */
const SHIPPED_EXPECTED =
  'system:\nYou write JavaScript.<|endoftext|>' +
  'user:\nAdd two numbers.<|endoftext|>' +
  'assistant:\nfunction add(a, b) {\n  return a + b;\n}<|endoftext|>' +
  'user (ana):\nNow subtract.<|endoftext|>' +
  'assistant:\n';

/** Llama 3's definition: BOS once, then <|start_header_id|>role<|end_header_id|>\n\n + trimmed content + <|eot_id|>. */
const LLAMA3_EXPECTED =
  '<|begin_of_text|>' +
  '<|start_header_id|>system<|end_header_id|>\n\nYou write JavaScript.<|eot_id|>' +
  '<|start_header_id|>user<|end_header_id|>\n\nAdd two numbers.<|eot_id|>' +
  '<|start_header_id|>assistant<|end_header_id|>\n\nfunction add(a, b) {\n  return a + b;\n}<|eot_id|>' +
  '<|start_header_id|>user<|end_header_id|>\n\nNow subtract.<|eot_id|>' +
  '<|start_header_id|>assistant<|end_header_id|>\n\n';

const json = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;

let tokenizer: TextTokenizer;
let shipped: ChatTemplate;
let tmp: string;
beforeAll(async () => {
  tokenizer = await loadFolderTokenizer(DRAFT_DIR);
  shipped = (await loadChatTemplate(folderFiles(DRAFT_DIR)))!;
  tmp = await mkdtemp(join(tmpdir(), 'edgespec-chat-template-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** The parts of a DraftEngine the chat prompt reads: the shipped tokenizer and a template. */
function engineWith(chatTemplate: ChatTemplate | null, maxPositions = 1024): DraftEngine {
  return { chatTemplate, tokenizer, config: { maxPositions, vocabSize: 4096, eosTokenIds: [0] } } as unknown as DraftEngine;
}

const messages = (body: unknown[]) => parseRequest(chatRequestSchema, { messages: body }).messages;

describe('the shipped chat template', () => {
  it('is the same in draft and target and renders a conversation to the exact expected text', async () => {
    expect(shipped).not.toBeNull();
    const target = await loadChatTemplate(folderFiles(TARGET_DIR));
    expect(target?.source).toBe(shipped.source);
    expect(shipped.specialTokens).toMatchObject({ bos_token: '<|endoftext|>', eos_token: '<|endoftext|>' });
    expect(shipped.render(conversation)).toBe(SHIPPED_EXPECTED);
  });

  it('appends the generation prompt only when asked', () => {
    expect(shipped.render(conversation, { addGenerationPrompt: false })).toBe(SHIPPED_EXPECTED.slice(0, -'assistant:\n'.length));
    expect(shipped.render(conversation, { addGenerationPrompt: true })).toBe(SHIPPED_EXPECTED);
  });

  it('turns the turn separator into the EOS token id, not its characters', () => {
    const ids = chatPromptTokens(messages(conversation), engineWith(shipped));
    expect(ids).toEqual(tokenizer.encode(SHIPPED_EXPECTED));
    expect(ids.filter((id) => id === 0)).toHaveLength(conversation.length);
    expect(tokenizer.decode(ids)).toBe(SHIPPED_EXPECTED.replaceAll('<|endoftext|>', ''));
  });
});

describe('a Llama-3 chat template (test/fixtures/chat-templates)', () => {
  const config = json(join(FIXTURES, 'llama-3.tokenizer_config.json'));
  const jinja = readFileSync(join(FIXTURES, 'llama-3.jinja'), 'utf8');

  it('renders to the reference string, from tokenizer_config.json as from a model folder', async () => {
    expect(config.chat_template).toBe(jinja);
    const template = chatTemplateFromConfig(config)!;
    expect(template.specialTokens).toMatchObject({ bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>' });
    // Llama 3 trims every message's content.
    const padded = conversation.map((m, i) => (i === 1 ? { ...m, content: `  ${m.content}\n` } : m));
    expect(template.render(padded)).toBe(LLAMA3_EXPECTED);
    await writeFile(join(tmp, 'tokenizer_config.json'), JSON.stringify(config));
    expect((await loadChatTemplate(folderFiles(tmp)))!.render(conversation)).toBe(LLAMA3_EXPECTED);
  });

  it('handles add_generation_prompt', () => {
    const template = chatTemplateFromConfig(config)!;
    expect(template.render(conversation, { addGenerationPrompt: false })).toBe(LLAMA3_EXPECTED.slice(0, -'<|start_header_id|>assistant<|end_header_id|>\n\n'.length));
  });

  it('takes chat_template.jinja over tokenizer_config.json, and the "default" of a list of named templates', async () => {
    const dir = await mkdtemp(join(tmp, 'jinja-'));
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: 'not this one' }));
    await writeFile(join(dir, 'chat_template.jinja'), jinja);
    expect((await loadChatTemplate(folderFiles(dir)))!.render(conversation)).toBe(LLAMA3_EXPECTED);
    const named = chatTemplateFromConfig({ ...config, chat_template: [{ name: 'tool_use', template: 'tools' }, { name: 'default', template: jinja }] })!;
    expect(named.render(conversation)).toBe(LLAMA3_EXPECTED);
  });

  it('joins text content parts with a newline and renders developer messages as system ones', () => {
    const ids = chatPromptTokens(
      messages([
        { role: 'developer', content: [{ type: 'text', text: 'You write JavaScript.' }] },
        { role: 'user', content: [{ type: 'text', text: 'Add two numbers.' }, { type: 'text', text: 'Use arrows.' }] },
      ]),
      engineWith(chatTemplateFromConfig(config)),
    );
    const expected =
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou write JavaScript.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nAdd two numbers.\nUse arrows.<|eot_id|>' +
      '<|start_header_id|>assistant<|end_header_id|>\n\n';
    // The shipped tokenizer does not know Llama's special tokens: they are plain text here, which is what makes the text comparable.
    expect(tokenizer.decode(ids)).toBe(expected);
  });
});

describe('templates that fail, and models without one', () => {
  const alternating = new ChatTemplate(
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}[{{ message['role'] }}] {{ message['content'] }}\n{% endfor %}",
  );

  it('passes the message of raise_exception on, as a 400 naming messages', () => {
    expect(alternating.render([{ role: 'user', content: 'hi' }], { addGenerationPrompt: false })).toBe('[user] hi\n');
    expect(() => alternating.render(conversation)).toThrow(ChatTemplateError);
    expect(() => alternating.render(conversation)).toThrow('Conversation roles must alternate user/assistant/user/assistant/...');
    const err = catchError(() => chatPromptTokens(messages(conversation), engineWith(alternating)));
    expect(err).toMatchObject({ status: 400, param: 'messages', code: 'chat_template_error' });
    expect(err.message).toContain('Conversation roles must alternate');
  });

  it('reports a template that does not parse as a template error', () => {
    const broken = new ChatTemplate('{% for message in messages %}{{ message.content }');
    expect(() => broken.render(conversation)).toThrow(ChatTemplateError);
    expect(catchError(() => chatPromptTokens(messages(conversation), engineWith(broken)))).toMatchObject({ status: 400, code: 'chat_template_error' });
  });

  it('has no template for a tokenizer_config.json without chat_template: a 400 chat_template_missing', async () => {
    expect(chatTemplateFromConfig({ eos_token: '</s>' })).toBeNull();
    expect(chatTemplateFromConfig({ chat_template: '  ' })).toBeNull();
    const dir = await mkdtemp(join(tmp, 'none-'));
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '</s>' }));
    expect(await loadChatTemplate(folderFiles(dir))).toBeNull();
    expect(catchError(() => chatPromptTokens(messages(conversation), engineWith(null)))).toMatchObject({ status: 400, param: 'messages', code: 'chat_template_missing' });
  });

  it('bounds the rendered prompt like a completion prompt: 413 naming messages', () => {
    const long = messages([{ role: 'user', content: 'x = 1;\n'.repeat(400) }]);
    expect(catchError(() => chatPromptTokens(long, engineWith(shipped, 64)))).toMatchObject({ status: 413, param: 'messages', code: 'context_length_exceeded' });
    // Over the byte bound: refused before tokenizing.
    const huge = messages([{ role: 'user', content: ' '.repeat(64 * tokenizer.maxBytesPerToken + 1) }]);
    expect(catchError(() => chatPromptTokens(huge, engineWith(shipped, 64))).message).toMatch(/more than \d+ bytes/);
  });
});

describe('chat max tokens', () => {
  const limits = (maxTokens: number | null) => ({ maxTokens }) as TenantLimits;
  const engine = engineWith(shipped, 1024);

  it('takes max_completion_tokens over max_tokens, and defaults to the context room capped at 256 and at the tenant cap', () => {
    expect(chatMaxTokens({ max_completion_tokens: 7, max_tokens: 9 }, 10, engine, limits(null))).toBe(7);
    expect(chatMaxTokens({ max_tokens: 9 }, 10, engine, limits(null))).toBe(9);
    expect(chatMaxTokens({}, 10, engine, limits(null))).toBe(256);
    expect(chatMaxTokens({}, 1000, engine, limits(null))).toBe(24);
    expect(chatMaxTokens({}, 10, engine, limits(100))).toBe(100);
  });

  it('refuses an explicit value above the tenant cap, naming the field it came in', () => {
    expect(catchError(() => chatMaxTokens({ max_completion_tokens: 200 }, 10, engine, limits(100)))).toMatchObject({ status: 400, param: 'max_completion_tokens' });
    expect(catchError(() => chatMaxTokens({ max_tokens: 200 }, 10, engine, limits(100)))).toMatchObject({ status: 400, param: 'max_tokens' });
  });
});

function catchError(fn: () => unknown): { status: number; param: string | null; code: string | null; message: string } {
  try {
    fn();
  } catch (err) {
    if (isApiError(err)) return err;
    throw err;
  }
  throw new Error('expected an ApiError');
}
