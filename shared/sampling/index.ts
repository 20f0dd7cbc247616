export * from './rng';
export * from './params';
export * from './distribution';
export * from './verify';
export * from './logprobs';
export * from './multipath';
