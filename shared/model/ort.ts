/**
 * The slice of the onnxruntime API the runtime uses. onnxruntime-node (origin)
 * and onnxruntime-web (edge, WASM) both satisfy it, so one runtime serves both
 * sides and the flavour is injected by the caller.
 */
export interface OrtTensor {
  readonly type: string;
  readonly dims: readonly number[];
  readonly data: unknown;
}

export interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
}

export interface OrtRuntime {
  InferenceSession: {
    create(model: Uint8Array, options?: Record<string, unknown>): Promise<OrtSession>;
  };
  Tensor: new (type: string, data: unknown, dims: readonly number[]) => OrtTensor;
}
