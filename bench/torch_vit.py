#!/usr/bin/python3
"""PyTorch side of `deno task bench vit`: the same ViT network and NOLA-MLP adapter math as
nola-gpu, on the CPU in float32, timed the way the Deno side times itself. Prints one JSON line.

    /usr/bin/python3 bench/torch_vit.py fixtures/tiny-vit-fashion --batch 16
    /usr/bin/python3 bench/torch_vit.py --config-json '{"model_type": "vit", ...}' --batch 1

The network (Hugging Face's ViTForImageClassification in eval mode, written out in plain torch
since transformers is not installed): the patch embedding as a strided convolution, the class
token before the patches, position embeddings; per layer LayerNorm, q/k/v (biases with
qkv_bias), softmax(q k^T / sqrt(head_dim)) v over all tokens, the output dense, residual,
LayerNorm, intermediate dense, exact-erf GELU, output dense, residual; a final LayerNorm and the
classifier over the class token.

Two measures, each warmed up once and then timed `--reps` times (median reported):

  forward   `--inner` forwards of a batch under no_grad, no adapters
  train     `--inner` steps of: zero the gradients, combine every module's factors
            (A = A0 + sum_i alpha_i A_i, B = sum_j beta_j B_j), forward with NOLA on both MLP
            linears of every layer (y += (lora_alpha / r) * (x A^T) B^T) and a new head of
            `--classes` classes, mean cross-entropy, backward; the base is frozen, alpha, beta
            and the new head get gradients

The inputs are the suite's formula, ((i * 7919) % 251) / 125 - 1 for element i (already
normalised), so with a model folder both sides classify the same images: the printed classes
are the forward's argmax per image. Bases are drawn once with torch's generator and kept (PyTorch
at its fastest); their values differ from nola-gpu's Philox bases, their shapes and FLOPs do
not. With --config-json the weights are random, N(0, initializer_range), unit LayerNorms.
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

from _torch_common import Nola, add_common_arguments, make_weights, run_info, start, timed


class Arch:
    """The sizes of a Hugging Face ViT config.json."""

    def __init__(self, c):
        self.c = c
        self.L = c["num_hidden_layers"]
        self.D = c["hidden_size"]
        self.I = c["intermediate_size"]
        self.H = c["num_attention_heads"]
        self.S = c["image_size"]
        self.P = c["patch_size"]
        self.C = c.get("num_channels", 3)
        self.eps = c.get("layer_norm_eps", 1e-12)
        self.qkv_bias = c.get("qkv_bias", True)
        self.classes = len(c.get("id2label") or {}) or 2
        self.N = (self.S // self.P) ** 2

    def shapes(self):
        """Every weight's name (ViTForImageClassification's) and shape."""
        D, I = self.D, self.I
        out = [
            ("vit.embeddings.cls_token", (1, 1, D)),
            ("vit.embeddings.position_embeddings", (1, self.N + 1, D)),
            ("vit.embeddings.patch_embeddings.projection.weight", (D, self.C, self.P, self.P)),
            ("vit.embeddings.patch_embeddings.projection.bias", (D,)),
        ]
        for l in range(self.L):
            p = f"vit.encoder.layer.{l}."
            for n in ("query", "key", "value"):
                out.append((p + f"attention.attention.{n}.weight", (D, D)))
                if self.qkv_bias:
                    out.append((p + f"attention.attention.{n}.bias", (D,)))
            out += [
                (p + "attention.output.dense.weight", (D, D)),
                (p + "attention.output.dense.bias", (D,)),
                (p + "layernorm_before.weight", (D,)),
                (p + "layernorm_before.bias", (D,)),
                (p + "layernorm_after.weight", (D,)),
                (p + "layernorm_after.bias", (D,)),
                (p + "intermediate.dense.weight", (I, D)),
                (p + "intermediate.dense.bias", (I,)),
                (p + "output.dense.weight", (D, I)),
                (p + "output.dense.bias", (D,)),
            ]
        out += [
            ("vit.layernorm.weight", (D,)),
            ("vit.layernorm.bias", (D,)),
            ("classifier.weight", (self.classes, D)),
            ("classifier.bias", (self.classes,)),
        ]
        return out


class Model:
    def __init__(self, arch, weights):
        self.arch, self.w = arch, weights
        self.adapters = {}
        self.head = (weights["classifier.weight"], weights["classifier.bias"])

    def linear(self, name, x):
        y = x @ self.w[name + ".weight"].t()
        if name + ".bias" in self.w:
            y = y + self.w[name + ".bias"]
        adapter = self.adapters.get(name)
        return y if adapter is None else y + adapter(x)

    def norm(self, name, x):
        return F.layer_norm(x, (self.arch.D,), self.w[name + ".weight"], self.w[name + ".bias"],
                            self.arch.eps)

    def forward(self, images):
        """Class logits [B, classes] of images [B, C, S, S]."""
        a, w = self.arch, self.w
        B, H, hd = images.shape[0], a.H, a.D // a.H
        e = "vit.embeddings."
        patches = F.conv2d(images, w[e + "patch_embeddings.projection.weight"],
                           w[e + "patch_embeddings.projection.bias"], stride=a.P)
        x = patches.flatten(2).transpose(1, 2)  # [B, N, D]
        x = torch.cat((w[e + "cls_token"].expand(B, 1, a.D), x), dim=1)
        x = x + w[e + "position_embeddings"]
        T = x.shape[1]
        for l in range(a.L):
            p = f"vit.encoder.layer.{l}."
            h = self.norm(p + "layernorm_before", x)
            heads = lambda n: self.linear(p + f"attention.attention.{n}", h).view(B, T, H, hd).transpose(1, 2)
            q, k, v = heads("query"), heads("key"), heads("value")
            att = ((q @ k.transpose(-1, -2)) * hd**-0.5).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, a.D)
            x = x + self.linear(p + "attention.output.dense", y)
            h = self.norm(p + "layernorm_after", x)
            h = F.gelu(self.linear(p + "intermediate.dense", h))
            x = x + self.linear(p + "output.dense", h)
        x = self.norm("vit.layernorm", x)
        return x[:, 0] @ self.head[0].t() + self.head[1]


def main():
    ap = argparse.ArgumentParser()
    add_common_arguments(
        ap, "a Hugging Face ViT folder (config.json, model.safetensors)", r=1, k=1024, l=1024,
        lora_alpha=1.0,
    )
    ap.add_argument("--classes", type=int, default=10)
    args = ap.parse_args()
    c, gen = start(args)
    arch = Arch(c)
    is_norm = lambda name: "layernorm" in name and name.endswith(".weight")
    weights, source = make_weights(
        arch.shapes(), args.model, gen, c.get("initializer_range", 0.02), is_norm
    )
    model = Model(arch, weights)
    B = args.batch
    n = B * arch.C * arch.S * arch.S
    pixels = ((torch.arange(n, dtype=torch.float64) * 7919) % 251 / 125 - 1).float()
    images = pixels.view(B, arch.C, arch.S, arch.S)
    classes = []

    def forward():
        with torch.no_grad():
            logits = model.forward(images)
        classes[:] = logits.argmax(dim=-1).tolist()

    forward_samples = timed(forward, args.reps, args.inner, B)

    scale = args.lora_alpha / args.r
    for l in range(arch.L):
        p = f"vit.encoder.layer.{l}."
        model.adapters[p + "intermediate.dense"] = Nola(arch.I, arch.D, args.r, args.k, args.l, scale, gen)
        model.adapters[p + "output.dense"] = Nola(arch.D, arch.I, args.r, args.k, args.l, scale, gen)
    adapters = list(model.adapters.values())
    head_w = torch.empty(args.classes, arch.D).normal_(0, 0.02, generator=gen).requires_grad_()
    head_b = torch.zeros(args.classes, requires_grad=True)
    model.head = (head_w, head_b)
    targets = torch.arange(B) % args.classes
    losses = []

    def train_step():
        for m in adapters:
            m.alpha.grad = m.beta.grad = None
            m.combine()
        head_w.grad = head_b.grad = None
        loss = F.cross_entropy(model.forward(images), targets)
        loss.backward()
        losses.append(loss.item())

    train_samples = timed(train_step, args.reps, args.inner, B)
    assert all(m.alpha.grad is not None and m.beta.grad is not None for m in adapters)
    assert head_w.grad is not None

    print(json.dumps({
        **run_info(source),
        "forward_images_per_s": statistics.median(forward_samples),
        "train_images_per_s": statistics.median(train_samples),
        "samples": {"forward": forward_samples, "train": train_samples},
        "adapted_modules": len(adapters),
        "trainable": sum(m.alpha.numel() + m.beta.numel() for m in adapters) + head_w.numel() + head_b.numel(),
        "classes": classes,
        "loss": losses[-1],
    }))


if __name__ == "__main__":
    main()
