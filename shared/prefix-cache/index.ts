export * from './block-hash';
export * from './kv-blocks';
