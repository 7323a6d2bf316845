#!/usr/bin/python3
"""PyTorch side of `deno task bench llama`: the same Llama-family network and NOLA adapter math as
nola-gpu, on the CPU in float32, timed the way the Deno side times itself. Prints one JSON line.

    /usr/bin/python3 bench/torch_llama.py fixtures/tiny-llama --batch 4 --seq 64
    /usr/bin/python3 bench/torch_llama.py --config-json '{"model_type": "llama", ...}' --batch 1

The network (HF's modeling_llama.py semantics, written out in plain torch since transformers is
not installed): token embedding; per layer RMSNorm, q/k/v projections (biases where the config
has them), rotary embeddings (rotate_half pairs, default / linear / llama3 frequencies),
grouped-query causal attention (query head h reads key-value head h // (H / KVH)), o_proj,
residual, RMSNorm, SwiGLU MLP, residual; a final RMSNorm and the head (untied or tied).

Three measures, each warmed up once and then timed `--reps` times (median reported):

  forward   `--inner` forwards of a B x T batch under no_grad, no adapters
  train     `--inner` steps of: zero the coefficient gradients, combine every module's factors
            (A = A0 + sum_i alpha_i A_i, B = sum_j beta_j B_j), forward with NOLA on all seven
            linears of every layer (y += (lora_alpha / r) * (x A^T) B^T), mean next-token
            cross-entropy, backward; the weights are frozen, only alpha and beta get gradients
  decode    greedy decoding with a key-value cache from a B = 1 prompt: the prompt in one pass,
            then one position a step; tokens/s counts the new tokens over the whole time

Bases are drawn once with torch's generator and kept (k x r x in and l x out x r floats a module):
PyTorch at its fastest, not regenerated every step. Their values differ from nola-gpu's
Philox bases; shapes and FLOPs are the same. With a model folder the weights are its
model.safetensors (so greedy tokens can be compared with nola-gpu's); with --config-json they
are random, N(0, initializer_range) with unit norms.
"""

import argparse
import json
import math
import os
import statistics

import torch
import torch.nn.functional as F

from _torch_common import Nola, add_common_arguments, make_weights, peak_rss_mib, run_info, start, timed

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Arch:
    """The sizes of a Llama/Mistral/Qwen2 config.json, read as HF reads them."""

    def __init__(self, c):
        self.c = c
        self.L = c["num_hidden_layers"]
        self.D = c["hidden_size"]
        self.I = c["intermediate_size"]
        self.V = c["vocab_size"]
        self.H = c["num_attention_heads"]
        self.KVH = c.get("num_key_value_heads") or self.H
        self.hd = c.get("head_dim") or self.D // self.H
        self.eps = c["rms_norm_eps"]
        self.tied = c.get("tie_word_embeddings", False)
        self.qkv_bias = c["model_type"] == "qwen2" or c.get("attention_bias", False)
        self.o_bias = c["model_type"] == "llama" and c.get("attention_bias", False)

    def linear_shapes(self, layer):
        """(name, out, in) of the seven linears of one layer."""
        Q, KV, D, I = self.H * self.hd, self.KVH * self.hd, self.D, self.I
        outs_ins = {
            "q_proj": (Q, D), "k_proj": (KV, D), "v_proj": (KV, D), "o_proj": (D, Q),
            "gate_proj": (I, D), "up_proj": (I, D), "down_proj": (D, I),
        }
        part = lambda n: "mlp" if n in ("gate_proj", "up_proj", "down_proj") else "self_attn"
        return [(f"layers.{layer}.{part(n)}.{n}", *outs_ins[n]) for n in LINEARS]

    def shapes(self):
        """Every weight's canonical name (no "model." prefix) and shape."""
        out = [("embed_tokens.weight", (self.V, self.D))]
        for l in range(self.L):
            for name, o, i in self.linear_shapes(l):
                out.append((name + ".weight", (o, i)))
                short = name.rsplit(".", 1)[1]
                if (self.qkv_bias and short in ("q_proj", "k_proj", "v_proj")) or (
                    self.o_bias and short == "o_proj"
                ):
                    out.append((name + ".bias", (o,)))
            out.append((f"layers.{l}.input_layernorm.weight", (self.D,)))
            out.append((f"layers.{l}.post_attention_layernorm.weight", (self.D,)))
        out.append(("norm.weight", (self.D,)))
        if not self.tied:
            out.append(("lm_head.weight", (self.V, self.D)))
        return out


def inv_freq(arch):
    """Rotary inverse frequencies: HF's default, linear and llama3 rules, in float32."""
    c, hd = arch.c, arch.hd
    freq = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2).float() / hd))
    scaling = c.get("rope_scaling")
    if not scaling:
        return freq
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return freq / scaling["factor"]
    if kind != "llama3":
        raise SystemExit(f"rope_scaling {kind!r} is not implemented here")
    factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / freq
    # Long wavelengths are divided by the factor, short ones kept, the band between blended.
    blend = ((context / wavelength - lo) / (hi - lo)).clamp(0, 1)
    return (1 - blend) * freq / factor + blend * freq


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + turned * sin


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


class Model:
    def __init__(self, arch, weights):
        self.arch, self.w = arch, weights
        self.adapters = {}
        self.freq = inv_freq(arch)

    def linear(self, name, x):
        y = x @ self.w[name + ".weight"].t()
        if name + ".bias" in self.w:
            y = y + self.w[name + ".bias"]
        adapter = self.adapters.get(name)
        return y if adapter is None else y + adapter(x)

    def forward(self, tokens, cache=None):
        """Logits [B, T, V]; with a cache (lists of [B, KVH, cap, hd] keys and values, and the
        positions already in it), the tokens are the next positions and join it."""
        a = self.arch
        B, T = tokens.shape
        H, KVH, hd = a.H, a.KVH, a.hd
        past = cache["past"] if cache else 0
        angles = torch.arange(past, past + T).float()[:, None] * self.freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        causal = torch.ones(T, past + T, dtype=torch.bool).tril(past)
        x = self.w["embed_tokens.weight"][tokens]
        for l in range(a.L):
            p = f"layers.{l}."
            h = rms_norm(x, self.w[p + "input_layernorm.weight"], a.eps)
            q = self.linear(p + "self_attn.q_proj", h).view(B, T, H, hd).transpose(1, 2)
            k = self.linear(p + "self_attn.k_proj", h).view(B, T, KVH, hd).transpose(1, 2)
            v = self.linear(p + "self_attn.v_proj", h).view(B, T, KVH, hd).transpose(1, 2)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            if cache:
                cache["k"][l][:, :, past : past + T] = k
                cache["v"][l][:, :, past : past + T] = v
                k = cache["k"][l][:, :, : past + T]
                v = cache["v"][l][:, :, : past + T]
            # Grouped-query attention without copying k and v per query head: the query heads of
            # one key-value head form a group dimension that broadcasts against it.
            qg = q.reshape(B, KVH, H // KVH, T, hd)
            att = (qg @ k.unsqueeze(2).transpose(-1, -2)) * hd**-0.5
            att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            y = (att @ v.unsqueeze(2)).reshape(B, H, T, hd).transpose(1, 2).reshape(B, T, H * hd)
            x = x + self.linear(p + "self_attn.o_proj", y)
            h = rms_norm(x, self.w[p + "post_attention_layernorm.weight"], a.eps)
            gate = self.linear(p + "mlp.gate_proj", h)
            x = x + self.linear(p + "mlp.down_proj", F.silu(gate) * self.linear(p + "mlp.up_proj", h))
        x = rms_norm(x, self.w["norm.weight"], a.eps)
        head = self.w["embed_tokens.weight" if a.tied else "lm_head.weight"]
        if cache:
            cache["past"] = past + T
        return x @ head.t()


def main():
    ap = argparse.ArgumentParser()
    add_common_arguments(
        ap, "a Hugging Face folder (config.json, model.safetensors)", r=16, k=64, l=64, lora_alpha=4.0
    )
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--prompt", default="1,2,3,4", help="comma-separated prompt token ids")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--decode-reps", type=int, default=1)
    args = ap.parse_args()
    c, gen = start(args)
    arch = Arch(c)
    # A folder without model.safetensors (a config alone) gets random weights.
    folder = args.model
    if folder and not os.path.exists(os.path.join(folder, "model.safetensors")):
        folder = None
    is_norm = lambda name: name.endswith("norm.weight")
    weights, source = make_weights(
        arch.shapes(), folder, gen, c.get("initializer_range", 0.02), is_norm, strip_prefix="model."
    )
    model = Model(arch, weights)
    B, T, V = args.batch, args.seq, arch.V

    tokens = torch.randint(0, V, (B, T + 1), generator=gen)
    inp, tgt = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def forward():
        with torch.no_grad():
            model.forward(inp)

    forward_samples = timed(forward, args.reps, args.inner, B * T)

    prompt = torch.tensor([[int(t) for t in args.prompt.split(",")]])
    capacity = prompt.shape[1] + args.new_tokens
    made = []

    def decode(new_tokens=args.new_tokens):
        made.clear()
        cache = {
            "past": 0,
            "k": [torch.empty(1, arch.KVH, capacity, arch.hd) for _ in range(arch.L)],
            "v": [torch.empty(1, arch.KVH, capacity, arch.hd) for _ in range(arch.L)],
        }
        with torch.no_grad():
            nxt = prompt
            while len(made) < new_tokens:
                logits = model.forward(nxt, cache)
                token = int(logits[0, -1].argmax())
                made.append(token)
                nxt = torch.tensor([[token]])

    # Warmed up as nola-gpu warms up: a short decode.
    decode_samples = timed(decode, args.decode_reps, 1, args.new_tokens, lambda: decode(2))

    scale = args.lora_alpha / args.r
    for l in range(arch.L):
        for name, out_f, in_f in arch.linear_shapes(l):
            model.adapters[name] = Nola(out_f, in_f, args.r, args.k, args.l, scale, gen)
    adapters = list(model.adapters.values())
    losses = []

    def train_step():
        for m in adapters:
            m.alpha.grad = m.beta.grad = None
            m.combine()
        logits = model.forward(inp)
        loss = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
        loss.backward()
        losses.append(loss.item())

    train_samples = timed(train_step, args.reps, args.inner, B * T)
    # Every coefficient got its gradient: a step that skipped a module would not be the same work.
    assert all(m.alpha.grad is not None and m.beta.grad is not None for m in adapters)

    print(json.dumps({
        **run_info(source),
        "forward_tokens_per_s": statistics.median(forward_samples),
        "train_tokens_per_s": statistics.median(train_samples),
        "decode_tokens_per_s": statistics.median(decode_samples),
        "samples": {"forward": forward_samples, "train": train_samples, "decode": decode_samples},
        "adapted_modules": len(adapters),
        "coefficients": sum(m.alpha.numel() + m.beta.numel() for m in adapters),
        "generated": made,
        "loss": losses[-1],
        "peak_rss_mib": peak_rss_mib(),
    }))


if __name__ == "__main__":
    main()
