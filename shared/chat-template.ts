import { Template } from '@huggingface/jinja';
import { readJson, type ModelFiles } from './model/load';

/**
 * A model's chat template: the Jinja template Hugging Face model folders
 * carry (`chat_template` in tokenizer_config.json, or a `chat_template.jinja`
 * file next to it), rendered the way transformers does (`apply_chat_template`)
 * with @huggingface/jinja, so a standard model folder works unchanged.
 */
export interface ChatMessage {
  role: string;
  content: string;
  name?: string;
}

/** A template that does not parse, or that refuses a conversation (`raise_exception`); the message is the template's. */
export class ChatTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChatTemplateError';
  }
}

/** The special tokens transformers hands every template (its SPECIAL_TOKENS_ATTRIBUTES), by name. */
const SPECIAL_TOKENS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;

export class ChatTemplate {
  /** Compiled on first use and kept: the engine holding this object lives as long as the isolate. */
  private compiled: Template | null = null;

  constructor(
    readonly source: string,
    /** The special tokens as strings (`bos_token`, `eos_token`, ...), passed to the template as variables. */
    readonly specialTokens: Readonly<Record<string, string>> = {},
  ) {}

  /**
   * The conversation as one prompt string; `addGenerationPrompt` (default on)
   * appends the opening of the assistant's turn. Throws ChatTemplateError for
   * a template that does not parse or rejects the conversation.
   */
  render(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): string {
    try {
      this.compiled ??= new Template(this.source);
      return this.compiled.render({
        // Fresh objects: the template sees plain data, never the caller's.
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: options.addGenerationPrompt ?? true,
        // As transformers passes them when the caller gives none: `tools is none` holds.
        tools: null,
        documents: null,
        ...this.specialTokens,
      });
    } catch (err) {
      throw new ChatTemplateError(err instanceof Error ? err.message : String(err));
    }
  }
}

/**
 * The chat template of a tokenizer_config.json (and of a `chat_template.jinja`
 * file, which wins, as in transformers), or null when the model has none.
 * `chat_template` may also be a list of named templates; "default" is used.
 */
export function chatTemplateFromConfig(tokenizerConfig: Record<string, unknown>, jinjaFile: string | null = null): ChatTemplate | null {
  const source = jinjaFile ?? namedTemplate(tokenizerConfig.chat_template);
  if (source === null || !source.trim()) return null;
  const specialTokens: Record<string, string> = {};
  for (const name of SPECIAL_TOKENS) {
    const token = tokenString(tokenizerConfig[name]);
    if (token !== null) specialTokens[name] = token;
  }
  return new ChatTemplate(source, specialTokens);
}

/** Reads a model folder's chat template: `chat_template.jinja`, else tokenizer_config.json's `chat_template`; null when neither. */
export async function loadChatTemplate(files: ModelFiles): Promise<ChatTemplate | null> {
  const jinja = await files.read('chat_template.jinja');
  const config = (await files.read('tokenizer_config.json')) ? ((await readJson(files, 'tokenizer_config.json')) as Record<string, unknown>) : {};
  return chatTemplateFromConfig(config, jinja ? new TextDecoder().decode(jinja) : null);
}

function namedTemplate(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const entry = value.find((t) => t && typeof t === 'object' && (t as { name?: unknown }).name === 'default') as { template?: unknown } | undefined;
    return typeof entry?.template === 'string' ? entry.template : null;
  }
  return null;
}

/** A special token as tokenizer_config.json writes it: a string, or an AddedToken object with `content`. */
function tokenString(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return null;
}
