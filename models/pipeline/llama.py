"""A small Llama-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention).

The same module is trained, evaluated and exported to ONNX in the Hugging Face
Optimum decoder layout, so the ONNX graph computes exactly what was trained.
Keys of `LlamaConfig` are Hugging Face's, so config.json is written from it as is.
"""
from dataclasses import dataclass, asdict
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class LlamaConfig:
    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 32
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    bos_token_id: int = 0
    eos_token_id: int = 0

    def to_hf(self) -> dict:
        d = asdict(self)
        d.update(
            model_type="llama",
            architectures=["LlamaForCausalLM"],
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
            pad_token_id=None,
            torch_dtype="float32",
            use_cache=True,
        )
        return d


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.h, self.kvh, self.d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.h * self.d, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.kvh * self.d, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.kvh * self.d, bias=False)
        self.o_proj = nn.Linear(self.h * self.d, c.hidden_size, bias=False)

    def forward(self, x, cos, sin, bias, past_k=None, past_v=None):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kvh, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kvh, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        present = (k, v)
        rep = self.h // self.kvh
        if rep > 1:
            t = k.shape[2]
            k = k[:, :, None].expand(b, self.kvh, rep, t, self.d).reshape(b, self.h, t, self.d)
            v = v[:, :, None].expand(b, self.kvh, rep, t, self.d).reshape(b, self.h, t, self.d)
        att = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(self.d)) + bias
        att = torch.softmax(att, dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, s, self.h * self.d)
        return self.o_proj(y), present


class MLP(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, bias, past_k=None, past_v=None):
        a, present = self.self_attn(self.input_layernorm(x), cos, sin, bias, past_k, past_v)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, present


class LlamaForCausalLM(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Block(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.apply(self._init)
        for n, p in self.named_parameters():
            if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.num_hidden_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def rope(self, position_ids):
        freqs = position_ids[..., None].float() * self.inv_freq  # [b, s, d/2]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [b, 1, s, d]
        return emb.cos(), emb.sin()

    def forward(self, input_ids, attention_mask=None, position_ids=None, past=None):
        """past: list of (key, value) [b, kvh, past_len, d] or None.

        Returns logits [b, s, vocab] and the list of present (key, value).
        attention_mask covers past + current positions (1 = attend).
        """
        b, s = input_ids.shape
        past_len = past[0][0].shape[2] if past is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + s, device=input_ids.device)[None].expand(b, s)
        cos, sin = self.rope(position_ids)
        # Causal + padding mask as an additive bias [b, 1, s, past+s]: query i
        # (absolute position past_len + i) may see key j when j <= past_len + i.
        total = past_len + s
        q_pos = torch.arange(s, device=input_ids.device)[:, None] + past_len
        k_pos = torch.arange(total, device=input_ids.device)[None, :]
        allowed = (k_pos <= q_pos)[None, None]
        if attention_mask is not None:
            allowed = allowed & (attention_mask[:, None, None, :] > 0)
        bias = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, -1e9)
        x = self.embed_tokens(input_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            pk, pv = past[i] if past is not None else (None, None)
            x, present = layer(x, cos, sin, bias, pk, pv)
            presents.append(present)
        return self.lm_head(self.norm(x)), presents


class OnnxWrapper(nn.Module):
    """Flat signature for torch.onnx.export in the Optimum decoder layout."""

    def __init__(self, model: LlamaForCausalLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        n = self.model.config.num_hidden_layers
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(n)]
        logits, presents = self.model(input_ids, attention_mask, position_ids, past)
        out = [logits]
        for k, v in presents:
            out += [k, v]
        return tuple(out)
