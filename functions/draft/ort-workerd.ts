import * as ort from 'onnxruntime-web/wasm';
// Bundled by wrangler as a pre-compiled WebAssembly.Module (CompiledWasm rule).
// Relative path: wrangler's module collector resolves .wasm imports as files, not packages.
import ortWasmModule from '../../node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm';
import type { OrtRuntime } from '../../shared/model';

/**
 * onnxruntime-web inside workerd. Workers refuse to compile WebAssembly from
 * bytes at run time and give modules no import.meta.url, so ORT's usual
 * fetch-and-compile path cannot work. ORT hands Emscripten only numThreads,
 * wasmBinary and locateFile, so: give it a non-empty placeholder wasmBinary
 * (skips the fetch) and answer WebAssembly.instantiate(placeholder, imports)
 * with an instance of the module wrangler compiled at upload time.
 * One thread (no SharedArrayBuffer threads in Workers), no proxy worker.
 */
const placeholder = new Uint8Array([0x00, 0x61, 0x73, 0x6d]);
let installed = false;
/**
 * The WebAssembly.Memory ORT's Emscripten module runs in (the threaded build
 * creates it in JS and passes it as an import; other builds export it). Its
 * buffer is the WASM heap: model weights, the arena, every run's tensors. It
 * only grows (by at least 20% a step, Emscripten's policy) and never shrinks.
 */
let wasmMemory: WebAssembly.Memory | null = null;

function installShim() {
  if (installed) return;
  installed = true;
  const instantiate = WebAssembly.instantiate.bind(WebAssembly);
  WebAssembly.instantiate = (async (source: unknown, imports?: WebAssembly.Imports) => {
    // ORT may hand back a copy of the placeholder, so match by size: no real module is 4 bytes.
    if ((source instanceof ArrayBuffer || ArrayBuffer.isView(source)) && source.byteLength === placeholder.byteLength) {
      const instance = await instantiate(ortWasmModule, imports);
      wasmMemory = findMemory(imports) ?? findMemory({ exports: instance.exports });
      return { instance, module: ortWasmModule };
    }
    return instantiate(source as WebAssembly.Module, imports);
  }) as typeof WebAssembly.instantiate;
  ort.env.wasm.wasmBinary = placeholder;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'error';
}

export function workerdOrt(): OrtRuntime {
  installShim();
  return ort as unknown as OrtRuntime;
}

/**
 * Bytes of ORT's WASM heap in this isolate, or null while ORT has not been
 * instantiated (nothing at import time: the first draft engine load does it).
 * functions/middleware/admission.ts counts it against the isolate's 128 MB.
 */
export function wasmHeapBytes(): number | null {
  return wasmMemory ? wasmMemory.buffer.byteLength : null;
}

function findMemory(imports: WebAssembly.Imports | undefined): WebAssembly.Memory | null {
  for (const module of Object.values(imports ?? {})) {
    for (const value of Object.values(module ?? {})) if (value instanceof WebAssembly.Memory) return value;
  }
  return null;
}
