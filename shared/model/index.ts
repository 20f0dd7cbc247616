export * from './config';
export * from './ort';
export * from './kv-cache';
export * from './causal-lm';
export * from './load';
