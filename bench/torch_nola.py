#!/usr/bin/python3
"""PyTorch side of `deno task bench train`: trains NOLA adapters on q and v of a GPT-2 folder's
attn.c_attn with the same math as nola-gpu (frozen base, A = A0 + sum alpha_i A_i, B = sum beta_j
B_j, y += (lora_alpha / r) * x A^T B^T, AdamW on the coefficients, mean cross-entropy over the
batch) and prints the training tokens/s as one JSON line.

Bases are drawn once with torch's generator and kept (k x r x in floats per module): PyTorch at
its fastest, not the authors' regenerate-every-step code. Only speed is compared, not values.

    /usr/bin/python3 bench/torch_nola.py MODEL_DIR --batch 8 --seq 64 --r 8 --k 256 --steps 20
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from _torch_common import read_safetensors_f32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = json.load(open(f"{args.model}/config.json"))
    L, H, C, V = cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["vocab_size"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    w = read_safetensors_f32(f"{args.model}/model.safetensors", "transformer.")
    r, k = args.r, args.k
    scale = 1.0  # lora_alpha / r with lora_alpha = r

    def basis(n, rows, cols, s):
        return (torch.rand(n, rows, cols) * 2 - 1) * s

    mods = []
    for _ in range(L):
        for _part in ("q", "v"):
            mods.append({
                "A0": basis(1, r, C, 1 / math.sqrt(C))[0],
                "A": basis(k, r, C, 1 / math.sqrt(k)),
                "B": basis(k, C, r, 1 / math.sqrt(k)),
                "alpha": torch.zeros(k, requires_grad=True),
                "beta": torch.zeros(k, requires_grad=True),
            })
    params = [m[n] for m in mods for n in ("alpha", "beta")]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)

    def adapter(m, x):
        a = m["A0"] + torch.einsum("k,kri->ri", m["alpha"], m["A"])
        b = torch.einsum("k,kor->or", m["beta"], m["B"])
        return scale * (x @ a.t()) @ b.t()

    def forward(tokens):
        T = tokens.shape[1]
        x = w["wte.weight"][tokens] + w["wpe.weight"][:T]
        mask = torch.full((T, T), float("-inf")).triu(1)
        for l in range(L):
            p = lambda n: w[f"h.{l}.{n}"]
            h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), eps)
            qkv = h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
            q, kk, v = qkv.split(C, dim=-1)
            q = q + adapter(mods[2 * l], h)
            v = v + adapter(mods[2 * l + 1], h)
            heads = lambda t: t.view(t.shape[0], T, H, C // H).transpose(1, 2)
            att = (heads(q) @ heads(kk).transpose(-1, -2)) / math.sqrt(C // H) + mask
            y = (att.softmax(-1) @ heads(v)).transpose(1, 2).reshape(x.shape)
            x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
            h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), eps)
            h = F.gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh")
            x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
        x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
        return x @ w["wte.weight"].t()

    tokens = torch.randint(0, V, (args.batch, args.seq + 1))
    inp, tgt = tokens[:, :-1], tokens[:, 1:]

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(forward(inp).reshape(-1, V), tgt.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    seconds = time.perf_counter() - start
    print(json.dumps({
        "tokens_per_s": args.batch * args.seq * args.steps / seconds,
        "step_ms": 1000 * seconds / args.steps,
        "loss": loss,
        "torch": torch.__version__,
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
