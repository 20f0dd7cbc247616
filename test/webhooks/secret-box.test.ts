import { describe, expect, it } from 'vitest';
import { createSecretBox, LOCAL_DEVELOPMENT_KEY, openSealedColumns, SEALED_PREFIX, SecretBoxError, secretKeys, type SecretBox } from '../../functions/webhooks/secret-box';
import { newWebhookSecret } from '../../functions/webhooks/signing';

/**
 * Secrets at rest (functions/webhooks/secret-box.ts): AES-256-GCM under an
 * HKDF-derived key, with the key id in the stored value and the row id as
 * associated data. Node's WebCrypto is the same API workerd has; the edge
 * tests check that D1 really holds sealed values (test/edge/webhooks.test.ts).
 */
const KEY_A = 'a'.repeat(16) + 'first-key-material-0123456789';
const KEY_B = 'b'.repeat(16) + 'second-key-material-987654321';
const ROW = 'whe_0123456789abcdef01234567';

/** A stored value with one base64url character of part `part` changed. */
function tamper(stored: string, part: 2 | 3): string {
  const parts = stored.split(':');
  const text = parts[part];
  parts[part] = (text[0] === 'A' ? 'B' : 'A') + text.slice(1);
  return parts.join(':');
}

describe('secret box', () => {
  it('round trip: a sealed secret opens to itself, names its key, and never contains the secret', async () => {
    const box = await createSecretBox(KEY_A);
    const secret = newWebhookSecret();
    const sealed = await box.seal(secret, ROW);
    expect(sealed).toMatch(new RegExp(`^${SEALED_PREFIX}${box.keyId}:[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]+$`));
    expect(box.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(sealed).not.toContain(secret);
    expect(sealed).not.toContain(secret.slice('whsec_'.length));
    expect(await box.open(sealed, ROW)).toEqual({ secret, reseal: null });
    // A random IV each time: the same secret never seals to the same value.
    expect(await box.seal(secret, ROW)).not.toBe(sealed);
    // Any printable secret (trigger secrets are whatever the sender uses), and non-ASCII too.
    for (const other of ['gh-webhook-secret', 'x'.repeat(256), 'clé-été-✓']) expect((await box.open(await box.seal(other, ROW), ROW)).secret).toBe(other);
  });

  it('the key id is a function of the key: the same material derives the same id in another box (isolate), another material another', async () => {
    const [a, again, b] = await Promise.all([createSecretBox(KEY_A), createSecretBox(KEY_A), createSecretBox(KEY_B)]);
    expect(again.keyId).toBe(a.keyId);
    expect(b.keyId).not.toBe(a.keyId);
    expect((await again.open(await a.seal('s3cret-value', ROW), ROW)).secret).toBe('s3cret-value');
  });

  it('the wrong key fails: a box without the sealing key refuses, naming the key id', async () => {
    const a = await createSecretBox(KEY_A);
    const b = await createSecretBox(KEY_B);
    const sealed = await a.seal('s3cret-value', ROW);
    await expect(b.open(sealed, ROW)).rejects.toThrow(SecretBoxError);
    await expect(b.open(sealed, ROW)).rejects.toThrow(a.keyId);
    // Even with the right key id in front, another key's ciphertext does not open.
    const forged = sealed.replace(a.keyId, b.keyId);
    await expect(b.open(forged, ROW)).rejects.toThrow(/does not open/);
  });

  it('tampering fails: a changed IV or ciphertext byte, a value moved to another row, a malformed value', async () => {
    const box = await createSecretBox(KEY_A);
    const sealed = await box.seal('s3cret-value', ROW);
    await expect(box.open(tamper(sealed, 2), ROW)).rejects.toThrow(/does not open/);
    await expect(box.open(tamper(sealed, 3), ROW)).rejects.toThrow(/does not open/);
    await expect(box.open(sealed.slice(0, -2), ROW)).rejects.toThrow(/does not open/);
    // The row id is the associated data: copied into another row, the value does not open there.
    await expect(box.open(sealed, 'whe_ffffffffffffffffffffffff')).rejects.toThrow(/another row/);
    for (const malformed of [`${SEALED_PREFIX}nothex:aaa:bbb`, `${SEALED_PREFIX}${box.keyId}:only-two`, `${SEALED_PREFIX}${box.keyId}:a:b:c`]) {
      await expect(box.open(malformed, ROW)).rejects.toThrow(SecretBoxError);
    }
    await expect(box.open(`${SEALED_PREFIX}${box.keyId}:%%%%:abcd`, ROW)).rejects.toThrow(/does not open/);
  });

  it('rotation: values sealed under a previous key, and clear values from before sealing, open and come back re-sealed under the current key', async () => {
    const old = await createSecretBox(KEY_A);
    const rotated = await createSecretBox(KEY_B, [KEY_A]);
    const sealedOld = await old.seal('s3cret-value', ROW);
    const opened = await rotated.open(sealedOld, ROW);
    expect(opened.secret).toBe('s3cret-value');
    expect(opened.reseal).toMatch(new RegExp(`^${SEALED_PREFIX}${rotated.keyId}:`));
    expect(await rotated.open(opened.reseal!, ROW)).toEqual({ secret: 's3cret-value', reseal: null });
    // The old box cannot read what the new key sealed.
    await expect(old.open(opened.reseal!, ROW)).rejects.toThrow(SecretBoxError);

    const legacy = newWebhookSecret();
    const clear = await rotated.open(legacy, ROW);
    expect(clear.secret).toBe(legacy);
    expect(clear.reseal).toMatch(new RegExp(`^${SEALED_PREFIX}${rotated.keyId}:`));
    expect((await rotated.open(clear.reseal!, ROW)).secret).toBe(legacy);
  });

  it('keys from the env: WEBHOOK_SECRETS_KEY (at least 32 characters) and its previous keys; unset, the public local key, which always opens', () => {
    expect(secretKeys({})).toEqual({ current: LOCAL_DEVELOPMENT_KEY, previous: [LOCAL_DEVELOPMENT_KEY], localDevelopment: true });
    expect(secretKeys({ WEBHOOK_SECRETS_KEY: ` ${KEY_B} `, WEBHOOK_SECRETS_KEY_PREVIOUS: `${KEY_A}, ` })).toEqual({ current: KEY_B, previous: [KEY_A, LOCAL_DEVELOPMENT_KEY], localDevelopment: false });
    expect(() => secretKeys({ WEBHOOK_SECRETS_KEY: 'too-short' })).toThrow(/at least 32 characters/);
  });
});

/** A D1 stand-in that records the statements it runs. */
function recordingDb() {
  const runs: Array<{ sql: string; values: unknown[] }> = [];
  const db = {
    prepare: (sql: string) => ({
      bind: (...values: unknown[]) => ({
        run: async () => {
          runs.push({ sql, values });
          return { meta: { changes: 1 } };
        },
      }),
    }),
  } as unknown as Pick<D1Database, 'prepare'>;
  return { db, runs };
}

describe('openSealedColumns (the stores’ read path)', () => {
  const row = (secret: string, previous: string | null) => ({ id: ROW, tenant_id: 'ten_x', secret, previous_secret: previous });
  let box: SecretBox;

  it('opens every sealed column and writes nothing when all are sealed under the current key', async () => {
    box = await createSecretBox(KEY_A);
    const { db, runs } = recordingDb();
    const opened = await openSealedColumns(db, box, 'webhook_endpoints', row(await box.seal('current', ROW), await box.seal('previous', ROW)), ['secret', 'previous_secret']);
    expect(opened).toMatchObject({ id: ROW, tenant_id: 'ten_x', secret: 'current', previous_secret: 'previous' });
    expect(runs).toEqual([]);
    // A NULL column stays NULL.
    expect((await openSealedColumns(db, box, 'webhook_endpoints', row(await box.seal('current', ROW), null), ['secret', 'previous_secret'])).previous_secret).toBeNull();
  });

  it('a row still in clear is re-sealed in place, guarded by what was read (a concurrent rotation wins)', async () => {
    box = await createSecretBox(KEY_B, [KEY_A]);
    const old = await createSecretBox(KEY_A);
    const { db, runs } = recordingDb();
    const underOld = await old.seal('previous', ROW);
    const opened = await openSealedColumns(db, box, 'webhook_endpoints', row('whsec_clear-legacy', underOld), ['secret', 'previous_secret']);
    expect(opened).toMatchObject({ secret: 'whsec_clear-legacy', previous_secret: 'previous' });
    expect(runs).toHaveLength(1);
    expect(runs[0].sql).toBe('UPDATE webhook_endpoints SET secret = ?, previous_secret = ? WHERE id = ? AND secret = ? AND previous_secret = ?');
    const [secret, previous, id, guardSecret, guardPrevious] = runs[0].values as string[];
    expect(id).toBe(ROW);
    expect([guardSecret, guardPrevious]).toEqual(['whsec_clear-legacy', underOld]);
    for (const [value, clear] of [[secret, 'whsec_clear-legacy'], [previous, 'previous']] as const) {
      expect(value).toMatch(new RegExp(`^${SEALED_PREFIX}${box.keyId}:`));
      expect((await box.open(value, ROW)).secret).toBe(clear);
    }
  });

  it('a column that does not open fails the read (nothing is written)', async () => {
    box = await createSecretBox(KEY_B);
    const other = await createSecretBox(KEY_A);
    const { db, runs } = recordingDb();
    await expect(openSealedColumns(db, box, 'triggers', { id: ROW, secret: await other.seal('x', ROW) }, ['secret'])).rejects.toThrow(SecretBoxError);
    expect(runs).toEqual([]);
  });
});
