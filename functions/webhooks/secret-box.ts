/**
 * Secrets at rest. Webhook endpoint signing secrets (whsec_…) and inbound
 * trigger secrets are HMAC keys the Worker must use again, so unlike API keys
 * (kept only as a hash) they cannot be hashed: D1 holds them sealed with
 * AES-256-GCM (WebCrypto) under a key derived with HKDF-SHA256 from the
 * Worker secret WEBHOOK_SECRETS_KEY. A D1 export, backup or query log then
 * signs and forges nothing. (Someone who can write to D1 can do worse than
 * swap a secret, so that is not what this defends against.)
 *
 * Stored form, base64url parts:
 *
 *   sbx1:<key id>:<iv>:<ciphertext + tag>
 *
 *   sbx1    the format: AES-256-GCM, HKDF-SHA256 key, 96-bit random IV
 *   key id  16 hex digits, derived from the key material (HKDF, its own info):
 *           which key sealed the value, without saying anything about the key
 *   AAD     the id of the row (whe_…, trg_…): a sealed value copied into
 *           another row does not open there
 *
 * Rotation: put the new key in WEBHOOK_SECRETS_KEY and the old one in
 * WEBHOOK_SECRETS_KEY_PREVIOUS (comma-separated, for more than one). A value
 * sealed under a previous key, or still in clear from before sealing existed,
 * opens and comes back with a `reseal`, which the stores write in its place
 * (`openSealedColumns`): rows migrate as they are read. A previous key can go
 * once no row names its id (`SELECT COUNT(*) FROM webhook_endpoints WHERE
 * secret LIKE 'sbx1:<id>:%' OR previous_secret LIKE 'sbx1:<id>:%'`, and the
 * same for `triggers`); each isolate logs the id it seals with.
 *
 * Without WEBHOOK_SECRETS_KEY (local stacks, tests) the key is
 * LOCAL_DEVELOPMENT_KEY, a public constant, and the isolate warns once. Not
 * ADMIN_SECRET: the local stacks make a new random ADMIN_SECRET at every
 * start while their D1 persists (scripts/stack.ts), so secrets sealed under
 * it would not open after a restart; and in a deployment, rotating the admin
 * bearer token would silently make every stored secret unreadable. A public
 * key is no worse than the clear storage it replaces, and it is always kept
 * as a previous key, so a deployment that ran without WEBHOOK_SECRETS_KEY
 * re-seals its rows under the real key once it is set.
 *
 * A clear secret is told from a sealed one by the "sbx1:" prefix. Webhook
 * secrets start with "whsec_"; a tenant could choose a trigger secret that
 * looks sealed, but such a row (written before sealing existed) would fail to
 * open for that tenant's own trigger only.
 */
export const SEALED_PREFIX = 'sbx1:';

/** The key of local stacks and tests: public, so it protects nothing; a deployment sets WEBHOOK_SECRETS_KEY. */
export const LOCAL_DEVELOPMENT_KEY = 'edgespec local development key: public, not a secret; set WEBHOOK_SECRETS_KEY';

/** Shortest accepted WEBHOOK_SECRETS_KEY: e.g. `openssl rand -base64 32` (44 characters). */
export const MIN_KEY_CHARS = 32;

/** What the box reads from the Worker's env (functions/env.ts has the rest). */
export interface SecretKeyEnv {
  /** Secret: the key material new values are sealed with. */
  WEBHOOK_SECRETS_KEY?: string;
  /** Secret: earlier values of WEBHOOK_SECRETS_KEY, comma-separated: they still open what they sealed. */
  WEBHOOK_SECRETS_KEY_PREVIOUS?: string;
}

/** A stored secret that does not open: unknown key id, a changed byte, another row's value, a malformed value. */
export class SecretBoxError extends Error {
  override name = 'SecretBoxError';
}

export interface Opened {
  secret: string;
  /** The value to store instead (sealed under the current key) when the stored one was clear or sealed under a previous key. */
  reseal: string | null;
}

export interface SecretBox {
  /** Id of the key new values are sealed with. */
  keyId: string;
  /** `secret` sealed for the row `rowId`. */
  seal(secret: string, rowId: string): Promise<string>;
  /** The clear secret of a stored value of the row `rowId` (clear or sealed); throws SecretBoxError when it does not open. */
  open(stored: string, rowId: string): Promise<Opened>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const SALT = encoder.encode('edgespec secret-box v1');
const IV_BYTES = 12;

interface DerivedKey {
  id: string;
  key: CryptoKey;
}

async function deriveKey(material: string): Promise<DerivedKey> {
  const ikm = await crypto.subtle.importKey('raw', encoder.encode(material), 'HKDF', false, ['deriveKey', 'deriveBits']);
  const hkdf = (info: string) => ({ name: 'HKDF', hash: 'SHA-256', salt: SALT, info: encoder.encode(info) });
  const key = await crypto.subtle.deriveKey(hkdf('aes-256-gcm key'), ikm, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  const id = new Uint8Array(await crypto.subtle.deriveBits(hkdf('key id'), ikm, 64));
  return { id: [...id].map((b) => b.toString(16).padStart(2, '0')).join(''), key };
}

/** A box sealing with `current`, opening with it and with every `previous` key. */
export async function createSecretBox(current: string, previous: readonly string[] = []): Promise<SecretBox> {
  const sealing = await deriveKey(current);
  const keys = new Map<string, DerivedKey>([[sealing.id, sealing]]);
  for (const material of previous) {
    const key = await deriveKey(material);
    if (!keys.has(key.id)) keys.set(key.id, key);
  }
  const seal = async (secret: string, rowId: string) => {
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const sealed = await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: encoder.encode(rowId) }, sealing.key, encoder.encode(secret));
    return `${SEALED_PREFIX}${sealing.id}:${base64url(iv)}:${base64url(new Uint8Array(sealed))}`;
  };
  return {
    keyId: sealing.id,
    seal,
    async open(stored, rowId) {
      // A row from before sealing existed: its clear secret, re-sealed for the caller to store.
      if (!stored.startsWith(SEALED_PREFIX)) return { secret: stored, reseal: await seal(stored, rowId) };
      const parts = stored.slice(SEALED_PREFIX.length).split(':');
      const [keyId, ivText, sealedText] = parts;
      if (parts.length !== 3 || !/^[0-9a-f]{16}$/.test(keyId)) throw new SecretBoxError(`the stored secret of ${rowId} is malformed`);
      const key = keys.get(keyId);
      if (!key) throw new SecretBoxError(`the secret of ${rowId} is sealed under key ${keyId}, which is neither WEBHOOK_SECRETS_KEY nor in WEBHOOK_SECRETS_KEY_PREVIOUS`);
      let clear: ArrayBuffer;
      try {
        const iv = fromBase64url(ivText);
        if (iv.length !== IV_BYTES) throw new Error('bad IV');
        clear = await crypto.subtle.decrypt({ name: 'AES-GCM', iv, additionalData: encoder.encode(rowId) }, key.key, fromBase64url(sealedText));
      } catch {
        throw new SecretBoxError(`the secret of ${rowId} does not open under key ${keyId}: it was changed, or sealed for another row`);
      }
      const secret = decoder.decode(clear);
      return { secret, reseal: keyId === sealing.id ? null : await seal(secret, rowId) };
    },
  };
}

/** The key material of an env: WEBHOOK_SECRETS_KEY (else the local development key) and the previous keys, which always include the local development key. */
export function secretKeys(env: SecretKeyEnv): { current: string; previous: string[]; localDevelopment: boolean } {
  const configured = env.WEBHOOK_SECRETS_KEY?.trim() || null;
  if (configured !== null && configured.length < MIN_KEY_CHARS) {
    throw new SecretBoxError(`WEBHOOK_SECRETS_KEY must be at least ${MIN_KEY_CHARS} characters (e.g. \`openssl rand -base64 32\`)`);
  }
  const previous = (env.WEBHOOK_SECRETS_KEY_PREVIOUS ?? '').split(',').map((k) => k.trim()).filter(Boolean);
  return { current: configured ?? LOCAL_DEVELOPMENT_KEY, previous: [...previous, LOCAL_DEVELOPMENT_KEY], localDevelopment: configured === null };
}

/** One box per isolate and key configuration (deriving keys costs a few WebCrypto calls; the env does not change). */
const boxes = new Map<string, Promise<SecretBox>>();

/** The box of an env; the first one of an isolate logs its key id, and warns when it is the public local key. */
export function secretBoxFor(env: SecretKeyEnv): Promise<SecretBox> {
  const { current, previous, localDevelopment } = secretKeys(env);
  const cacheKey = JSON.stringify([current, previous]);
  let box = boxes.get(cacheKey);
  if (!box) {
    box = createSecretBox(current, previous).then((made) => {
      if (localDevelopment) {
        console.warn(`[secrets] WEBHOOK_SECRETS_KEY is not set: webhook and trigger secrets are sealed in D1 with the public local development key (id ${made.keyId}). Set it in a deployment: npx wrangler secret put WEBHOOK_SECRETS_KEY`);
      } else console.log(`[secrets] sealing webhook and trigger secrets under key ${made.keyId}`);
      return made;
    });
    box.catch(() => boxes.delete(cacheKey));
    boxes.set(cacheKey, box);
  }
  return box;
}

/** The tables whose rows hold sealed secrets (names only ever come from this code). */
export type SealedTable = 'webhook_endpoints' | 'triggers';

/**
 * A row read from D1 with its `columns` opened. Columns that needed a reseal
 * (clear, or a previous key) are written back sealed under the current key,
 * only if the row still holds what was read (a rotation in between wins); a
 * failed write-back is logged and tried again at the next read.
 */
export async function openSealedColumns<T extends { id: string }>(
  db: Pick<D1Database, 'prepare'>,
  box: SecretBox,
  table: SealedTable,
  row: T,
  columns: ReadonlyArray<keyof T & string>,
): Promise<T> {
  const opened: Record<string, unknown> = { ...row };
  const changed: Array<{ column: string; stored: string; reseal: string }> = [];
  for (const column of columns) {
    const stored = row[column];
    if (stored === null || stored === undefined) continue;
    if (typeof stored !== 'string') throw new SecretBoxError(`${table}.${column} of ${row.id} is not text`);
    const { secret, reseal } = await box.open(stored, row.id);
    opened[column] = secret;
    if (reseal) changed.push({ column, stored, reseal });
  }
  if (changed.length) {
    const sets = changed.map((c) => `${c.column} = ?`).join(', ');
    const unchanged = changed.map((c) => `${c.column} = ?`).join(' AND ');
    await db
      .prepare(`UPDATE ${table} SET ${sets} WHERE id = ? AND ${unchanged}`)
      .bind(...changed.map((c) => c.reseal), row.id, ...changed.map((c) => c.stored))
      .run()
      .catch((err: unknown) => console.error(`[secrets] re-sealing ${table} ${row.id} failed; the next read tries again`, err));
  }
  return opened as T;
}

function base64url(bytes: Uint8Array): string {
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

function fromBase64url(text: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error('not base64url');
  const binary = atob(text.replaceAll('-', '+').replaceAll('_', '/') + '='.repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}
