/**
 * Just enough of the protobuf wire format to read and rewrite an ONNX model
 * without Python's onnx package or a protobuf library: a message is a list of
 * fields in file order, each kept as raw bytes unless a caller decodes it, so
 * everything a rewrite does not touch is written back byte for byte.
 *
 * Field numbers are onnx.proto3's (github.com/onnx/onnx, onnx/onnx.proto):
 * ModelProto.graph 7; GraphProto node 1, initializer 5, input 11, output 12,
 * value_info 13; NodeProto input 1, output 2, name 3, op_type 4; TensorProto
 * dims 1, data_type 2, name 8, raw_data 9, float_data 4, int32_data 5;
 * ValueInfoProto name 1, type 2; TypeProto tensor_type 1; TypeProto.Tensor
 * elem_type 1, shape 2; TensorShapeProto dim 1; Dimension dim_value 1, dim_param 2.
 */

export const WIRE = { varint: 0, fixed64: 1, bytes: 2, fixed32: 5 } as const;

export interface Field {
  field: number;
  wire: number;
  /** varint fields: the value; others: the payload bytes (a length-delimited field without its length). */
  value: bigint | Uint8Array;
}

export type Message = Field[];

function readVarint(bytes: Uint8Array, at: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (at >= bytes.length) throw new Error('protobuf: truncated varint');
    const b = bytes[at++];
    result |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [result, at];
    shift += 7n;
  }
}

function writeVarint(out: number[], value: bigint): void {
  // Negative int64 values are encoded as their two's complement in 10 bytes.
  let v = value < 0n ? value + (1n << 64n) : value;
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
}

export function decodeMessage(bytes: Uint8Array): Message {
  const fields: Message = [];
  let at = 0;
  while (at < bytes.length) {
    const [tag, next] = readVarint(bytes, at);
    at = next;
    const field = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (wire === WIRE.varint) {
      const [value, after] = readVarint(bytes, at);
      fields.push({ field, wire, value });
      at = after;
    } else if (wire === WIRE.bytes) {
      const [length, after] = readVarint(bytes, at);
      const end = after + Number(length);
      if (end > bytes.length) throw new Error('protobuf: truncated length-delimited field');
      fields.push({ field, wire, value: bytes.subarray(after, end) });
      at = end;
    } else if (wire === WIRE.fixed64 || wire === WIRE.fixed32) {
      const size = wire === WIRE.fixed64 ? 8 : 4;
      fields.push({ field, wire, value: bytes.subarray(at, at + size) });
      at += size;
    } else {
      throw new Error(`protobuf: wire type ${wire} (field ${field}) is not supported`);
    }
  }
  return fields;
}

export function encodeMessage(message: Message): Uint8Array {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const head: number[] = [];
  for (const { field, wire, value } of message) {
    head.length = 0;
    writeVarint(head, (BigInt(field) << 3n) | BigInt(wire));
    if (wire === WIRE.varint) {
      writeVarint(head, value as bigint);
      chunks.push(Uint8Array.from(head));
      total += head.length;
      continue;
    }
    const payload = value as Uint8Array;
    if (wire === WIRE.bytes) writeVarint(head, BigInt(payload.length));
    chunks.push(Uint8Array.from(head), payload);
    total += head.length + payload.length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

export const text = (value: bigint | Uint8Array) => new TextDecoder().decode(value as Uint8Array);
export const bytesField = (field: number, value: Uint8Array | string): Field => ({ field, wire: WIRE.bytes, value: typeof value === 'string' ? new TextEncoder().encode(value) : value });
export const varintField = (field: number, value: number | bigint): Field => ({ field, wire: WIRE.varint, value: BigInt(value) });

/** Every value of a string field (a repeated one gives several). */
export function strings(message: Message, field: number): string[] {
  return message.filter((f) => f.field === field).map((f) => text(f.value));
}

export function firstString(message: Message, field: number): string | undefined {
  return strings(message, field)[0];
}

/** Values of an int64 field, packed or not. */
export function int64s(message: Message, field: number): bigint[] {
  const out: bigint[] = [];
  for (const f of message) {
    if (f.field !== field) continue;
    if (f.wire === WIRE.varint) out.push(f.value as bigint);
    else {
      const bytes = f.value as Uint8Array;
      for (let at = 0; at < bytes.length; ) {
        const [v, next] = readVarint(bytes, at);
        out.push(BigInt.asIntN(64, v));
        at = next;
      }
    }
  }
  return out;
}

/** ONNX TensorProto.DataType values used here. */
export const DATA_TYPE = { float: 1, uint8: 2, int8: 3, int32: 6, int64: 7 } as const;
const ELEMENT_BYTES: Record<number, number> = { [DATA_TYPE.float]: 4, [DATA_TYPE.uint8]: 1, [DATA_TYPE.int8]: 1, [DATA_TYPE.int32]: 4, [DATA_TYPE.int64]: 8 };

export const GRAPH = { node: 1, name: 2, initializer: 5, input: 11, output: 12, valueInfo: 13 } as const;
export const NODE = { input: 1, output: 2, name: 3, opType: 4 } as const;
export const TENSOR = { dims: 1, dataType: 2, floatData: 4, int32Data: 5, name: 8, rawData: 9 } as const;

export interface Initializer {
  name: string;
  dims: number[];
  dataType: number;
  /** Little-endian element bytes (raw_data, or float_data / int32_data re-packed). */
  raw: Uint8Array;
}

export function readInitializer(message: Message): Initializer {
  const name = firstString(message, TENSOR.name) ?? '';
  const dims = int64s(message, TENSOR.dims).map(Number);
  const dataType = Number(message.find((f) => f.field === TENSOR.dataType)?.value ?? 0n);
  const rawField = message.find((f) => f.field === TENSOR.rawData);
  let raw: Uint8Array;
  if (rawField) raw = rawField.value as Uint8Array;
  else if (dataType === DATA_TYPE.float) {
    // float_data is packed fixed32.
    raw = message.filter((f) => f.field === TENSOR.floatData).reduce<Uint8Array>((acc, f) => concat(acc, f.value as Uint8Array), new Uint8Array(0));
  } else if (dataType === DATA_TYPE.int8 || dataType === DATA_TYPE.uint8 || dataType === DATA_TYPE.int32) {
    // int32_data holds int8/uint8/int32 elements as varints.
    const values = int64s(message, TENSOR.int32Data);
    const size = ELEMENT_BYTES[dataType];
    raw = new Uint8Array(values.length * size);
    const view = new DataView(raw.buffer);
    values.forEach((v, i) => (size === 1 ? view.setInt8(i, Number(BigInt.asIntN(8, v))) : view.setInt32(i * 4, Number(v), true)));
  } else throw new Error(`initializer ${name}: data type ${dataType} without raw_data is not supported`);
  const count = dims.reduce((a, b) => a * b, 1);
  if (raw.length !== count * (ELEMENT_BYTES[dataType] ?? NaN)) throw new Error(`initializer ${name}: ${raw.length} bytes for dims [${dims}] of type ${dataType}`);
  return { name, dims, dataType, raw };
}

/** A TensorProto with raw_data (how onnx.numpy_helper writes them). */
export function writeInitializer(t: Initializer): Message {
  const packedDims: number[] = [];
  for (const d of t.dims) writeVarint(packedDims, BigInt(d));
  return [bytesField(TENSOR.dims, Uint8Array.from(packedDims)), varintField(TENSOR.dataType, t.dataType), bytesField(TENSOR.name, t.name), bytesField(TENSOR.rawData, t.raw)];
}

/** Shape of a graph input/output ValueInfoProto: numbers for fixed dims, strings for symbolic ones. */
export function valueInfoShape(message: Message): { name: string; elemType: number; dims: Array<number | string> } {
  const name = firstString(message, 1) ?? '';
  const type = decodeMessage(message.find((f) => f.field === 2)!.value as Uint8Array);
  const tensor = decodeMessage(type.find((f) => f.field === 1)!.value as Uint8Array);
  const elemType = Number(tensor.find((f) => f.field === 1)?.value ?? 0n);
  const shapeField = tensor.find((f) => f.field === 2);
  const dims = shapeField
    ? decodeMessage(shapeField.value as Uint8Array).map((d) => {
        const dim = decodeMessage(d.value as Uint8Array);
        const fixed = dim.find((f) => f.field === 1);
        return fixed ? Number(fixed.value) : (firstString(dim, 2) ?? '?');
      })
    : [];
  return { name, elemType, dims };
}

/** A tensor ValueInfoProto with the given shape. */
export function writeValueInfo(name: string, elemType: number, dims: Array<number | string>): Message {
  const shape: Message = dims.map((d) => bytesField(1, encodeMessage([typeof d === 'number' ? varintField(1, d) : bytesField(2, d)])));
  const tensor: Message = [varintField(1, elemType), bytesField(2, encodeMessage(shape))];
  return [bytesField(1, name), bytesField(2, encodeMessage([bytesField(1, encodeMessage(tensor))]))];
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
