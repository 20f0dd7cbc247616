"""ONNX export (Hugging Face Optimum decoder layout with KV cache) and int8 quantization.

  export.py models  --work W    -> W/out/edgespec-target (fp32), W/out/edgespec-draft (int8)
  export.py fixture --out DIR --tokenizer DIR   -> tiny random GQA model in the standard HF layout

Quantization is a graph rewrite with onnx.helper + numpy (no Python onnxruntime
here): every MatMul with a constant weight becomes DynamicQuantizeLinear on the
activation + MatMulInteger with int8 per-output-channel weights, the format
that is fastest in onnxruntime-web's WASM backend (ARCHITECTURE.md: Platform facts: int8 ~2x fp32;
DequantizeLinear weight-only and 4-bit are slower).
"""
import argparse
import json
import os
import shutil

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
import torch

from data import setup_torch, log
from llama import LlamaConfig, LlamaForCausalLM, OnnxWrapper

OPSET = 14


def export_onnx(model: LlamaForCausalLM, path: str):
    c = model.config
    model.eval()
    wrapper = OnnxWrapper(model)
    b, s, past = 1, 3, 2
    ids = torch.randint(0, c.vocab_size, (b, s))
    mask = torch.ones(b, past + s, dtype=torch.int64)
    pos = torch.arange(past, past + s)[None]
    pkv = []
    in_names = ["input_ids", "attention_mask", "position_ids"]
    out_names = ["logits"]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    for i in range(c.num_hidden_layers):
        for kind in ("key", "value"):
            pkv.append(torch.randn(b, c.num_key_value_heads, past, c.head_dim))
            n_in, n_out = f"past_key_values.{i}.{kind}", f"present.{i}.{kind}"
            in_names.append(n_in)
            out_names.append(n_out)
            axes[n_in] = {0: "batch_size", 2: "past_sequence_length"}
            axes[n_out] = {0: "batch_size", 2: "total_sequence_length"}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(wrapper, (ids, mask, pos, *pkv), path, input_names=in_names, output_names=out_names,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    return m


def quantize_matmuls(src: str, dst: str):
    """MatMul(x, W const) -> DynamicQuantizeLinear(x) + MatMulInteger(x_q, W_q) * (x_scale * w_scale)."""
    m = onnx.load(src)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes = []
    drop = set()
    count = 0
    for node in g.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        if w.ndim != 2:
            new_nodes.append(node)
            continue
        count += 1
        base = f"{node.name or node.output[0]}_q".replace("/", "_")
        scale = np.maximum(np.abs(w).max(axis=0), 1e-8) / 127.0  # per output column
        wq = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        g.initializer.extend([
            numpy_helper.from_array(wq, base + "_W"),
            numpy_helper.from_array(np.zeros(w.shape[1], dtype=np.int8), base + "_Wzp"),
            numpy_helper.from_array(scale.astype(np.float32), base + "_Wscale"),
        ])
        drop.add(node.input[1])
        x = node.input[0]
        new_nodes += [
            helper.make_node("DynamicQuantizeLinear", [x], [base + "_xq", base + "_xs", base + "_xzp"], name=base + "_dql"),
            helper.make_node("MatMulInteger", [base + "_xq", base + "_W", base + "_xzp", base + "_Wzp"], [base + "_i32"], name=base + "_mmi"),
            helper.make_node("Cast", [base + "_i32"], [base + "_f"], to=TensorProto.FLOAT, name=base + "_cast"),
            helper.make_node("Mul", [base + "_xs", base + "_Wscale"], [base + "_s"], name=base + "_smul"),
            helper.make_node("Mul", [base + "_f", base + "_s"], [node.output[0]], name=base + "_mul"),
        ]
    del g.node[:]
    g.node.extend(new_nodes)
    still_used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name not in drop or t.name in still_used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    return count


def write_hf_folder(model: LlamaForCausalLM, out: str, tokenizer_dir: str, onnx_name: str, quantized: bool, extra: dict):
    """config.json + tokenizer + onnx/<file> in the layout transformers.js and the edgespec loader read."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "onnx"), exist_ok=True)
    cfg = model.config.to_hf()
    cfg.update(extra)
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"], "max_length": cfg["max_position_embeddings"]},
              open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokenizer_dir, f), os.path.join(out, f))
    tmp = os.path.join(out, "onnx", "model.fp32.onnx")
    export_onnx(model, tmp)
    if quantized:
        n = quantize_matmuls(tmp, os.path.join(out, "onnx", onnx_name))
        log(f"quantized {n} MatMuls -> {onnx_name}")
        os.remove(tmp)
    else:
        os.replace(tmp, os.path.join(out, "onnx", onnx_name))


@torch.no_grad()
def reference(model: LlamaForCausalLM, seed: int):
    """Inputs and PyTorch logits for the ONNX checks (check_onnx.ts)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, model.config.vocab_size, (2, 12), generator=g)
    logits, _ = model(ids)
    greedy = ids[:1, :6]
    for _ in range(10):
        lg, _ = model(greedy)
        greedy = torch.cat([greedy, lg[:, -1:].argmax(-1)], dim=1)
    return {"input_ids": ids.tolist(), "logits_last": [[round(x, 6) for x in row] for row in logits[:, -1].tolist()],
            "greedy_prompt": greedy[0, :6].tolist(), "greedy_tokens": greedy[0, 6:].tolist()}


def cmd_models(a):
    work = a.work
    from train import load_model
    out = os.path.join(work, "out")
    tok = os.path.join(work, "tokenizer")
    meta = lambda name: {k: v for k, v in json.load(open(os.path.join(work, "models", name, "config.json"))).items() if k != "edgespec_config" and k != "loss_curve"}
    target = load_model(work, "target")
    write_hf_folder(target, os.path.join(out, "edgespec-target"), tok, "model.onnx", False, {"edgespec": {"role": "target", **meta("target")}})
    json.dump(reference(target, 1), open(os.path.join(out, "edgespec-target.reference.json"), "w"))
    draft = load_model(work, "draft_aligned")
    write_hf_folder(draft, os.path.join(out, "edgespec-draft"), tok, "model_quantized.onnx", True, {"edgespec": {"role": "draft", **meta("draft_aligned")}})
    ref = reference(draft, 2)
    ref["quantized"] = True
    json.dump(ref, open(os.path.join(out, "edgespec-draft.reference.json"), "w"))
    for name in ("edgespec-target", "edgespec-draft"):
        for root, _, files in os.walk(os.path.join(out, name)):
            for f in files:
                log(f"{name}: {os.path.relpath(os.path.join(root, f), out)} {os.path.getsize(os.path.join(root, f)):,} bytes")


def cmd_fixture(a):
    """Tiny random-weight GQA model in the standard HF transformers.js layout (onnx/model.onnx)."""
    torch.manual_seed(1234)
    vocab = json.load(open(os.path.join(a.tokenizer, "tokenizer.json")))["model"]["vocab"]
    # head_dim deliberately != hidden_size / num_attention_heads: loaders must read head_dim.
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, max_position_embeddings=512, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20.0)  # larger weights so greedy decoding does not collapse to one token
    write_hf_folder(model, a.out, a.tokenizer, "model.onnx", False, {"edgespec": {"role": "fixture", "note": "random weights, for loader tests"}})
    ref = reference(model, 3)
    json.dump(ref, open(os.path.join(a.out, "reference.json"), "w"))
    log(f"fixture written to {a.out}: {sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(a.out) for f in fs):,} bytes")


def main():
    setup_torch()
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("models")
    m.add_argument("--work", required=True)
    f = sub.add_parser("fixture")
    f.add_argument("--out", required=True)
    f.add_argument("--tokenizer", required=True)
    a = p.parse_args()
    {"models": cmd_models, "fixture": cmd_fixture}[a.cmd](a)


if __name__ == "__main__":
    main()
