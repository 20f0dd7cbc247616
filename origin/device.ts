/**
 * Execution provider selection for the target. `cuda` uses onnxruntime's CUDA
 * execution provider when this onnxruntime-node install has it (its install
 * script fetches the CUDA binaries; an offline or `ONNXRUNTIME_NODE_INSTALL=skip`
 * install has only the CPU one). When the provider cannot be created the
 * origin still starts, on the CPU, and says why.
 */
export async function selectDevice<T>(
  requested: 'cpu' | 'cuda',
  load: (executionProviders?: string[]) => Promise<T>,
  warn: (line: string) => void,
): Promise<{ device: 'cpu' | 'cuda'; loaded: T }> {
  if (requested === 'cpu') return { device: 'cpu', loaded: await load() };
  try {
    // CUDA alone, no CPU entry: with ['cuda', 'cpu'] onnxruntime would fall back silently, and we want to say so.
    return { device: 'cuda', loaded: await load(['cuda']) };
  } catch (err) {
    warn(
      `--device cuda: onnxruntime's CUDA execution provider is not available here (${(err as Error).message.split('\n')[0]}); ` +
        'falling back to the CPU. On a GPU machine install onnxruntime-node with its CUDA binaries (its install script downloads them; see README).',
    );
    return { device: 'cpu', loaded: await load() };
  }
}
