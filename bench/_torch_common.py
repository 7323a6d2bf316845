"""What the PyTorch sides of the benches share (`bench/torch_llama.py`, `bench/torch_vit.py`): the
command line every script takes, weights read from a folder's model.safetensors or drawn at
random, a NOLA adapter with materialised bases, the timing loop, and the facts about torch that
head each script's JSON line.

The scripts run as `/usr/bin/python3 bench/<script>.py ...`, so Python puts bench/ first on the
module path and `import _torch_common` finds this file.
"""

import json
import math
import os
import struct
import time

import torch


def add_common_arguments(ap, model_help, r, k, l, lora_alpha):
    """The arguments of every script: a model folder or --config-json, the batch, NOLA's sizes
    (defaults given), repetitions, threads and the seed."""
    ap.add_argument("model", nargs="?", help=model_help)
    ap.add_argument("--config-json", help="a config.json's text, for random weights")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--r", type=int, default=r)
    ap.add_argument("--k", type=int, default=k)
    ap.add_argument("--l", type=int, default=l)
    ap.add_argument("--lora-alpha", type=float, default=lora_alpha)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--inner", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)


def start(args):
    """Checks that one model source was given, sets torch's threads, and returns the config (the
    folder's config.json or --config-json) and the seeded generator every random draw uses."""
    if (args.model is None) == (args.config_json is None):
        raise SystemExit("give a model folder or --config-json, not both")
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    if args.config_json:
        return json.loads(args.config_json), gen
    with open(os.path.join(args.model, "config.json")) as f:
        return json.load(f), gen


def read_safetensors_f32(path, strip_prefix=""):
    """The F32 tensors of a safetensors file by name, `strip_prefix` removed from the names."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, this script reads F32 only")
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32).reshape(info["shape"])
        out[name.removeprefix(strip_prefix) if strip_prefix else name] = t
    return out


def make_weights(shapes, folder, gen, std, is_norm_weight, strip_prefix=""):
    """The weights named in `shapes` ((name, shape) pairs) and where they came from: read from
    `folder`/model.safetensors when a folder is given ("checkpoint"), else drawn ("random"):
    norm weights one, biases zero, the rest N(0, std)."""
    if folder:
        path = os.path.join(folder, "model.safetensors")
        w = read_safetensors_f32(path, strip_prefix)
        missing = [n for n, _ in shapes if n not in w]
        if missing:
            raise SystemExit(f"{folder}/model.safetensors: missing {missing[0]}")
        return w, "checkpoint"
    w = {}
    for name, shape in shapes:
        if is_norm_weight(name):
            w[name] = torch.ones(shape)
        elif name.endswith(".bias"):
            w[name] = torch.zeros(shape)
        else:
            w[name] = torch.empty(shape).normal_(0, std, generator=gen)
    return w, "random"


class Nola:
    """One module's NOLA adapter with materialised bases (the "official" init: A0, zeros)."""

    def __init__(self, out_f, in_f, r, k, l, scale, gen):
        # Drawn in place: the 1.1B shape's bases are 3 GB, and a temporary copy would be another.
        u = lambda scale, *shape: torch.empty(*shape).uniform_(-scale, scale, generator=gen)
        self.a0 = u(1 / math.sqrt(in_f), r, in_f)
        self.a_bases = u(1 / math.sqrt(k), k, r * in_f)  # [k, r*in]
        self.b_bases = u(1 / math.sqrt(l), l, out_f * r)  # [l, out*r]
        self.alpha = torch.zeros(k, requires_grad=True)
        self.beta = torch.zeros(l, requires_grad=True)
        self.shape = (out_f, in_f, r)
        self.scale = scale
        self.a = self.b = None

    def combine(self):
        out_f, in_f, r = self.shape
        self.a = self.a0 + (self.alpha @ self.a_bases).view(r, in_f)
        self.b = (self.beta @ self.b_bases).view(out_f, r)

    def __call__(self, x):
        return self.scale * ((x @ self.a.t()) @ self.b.t())


def blas_library():
    """The BLAS shared library this process mapped: on Debian, whichever libblas.so.3 the
    alternatives system points to (netlib's reference BLAS unless OpenBLAS or BLIS is installed),
    which sets the speed of every large matrix product."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and "blas" in os.path.basename(fields[5]).lower():
                return fields[5]
    return "built in"


def peak_rss_mib():
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over
    exec, so under Deno it would report the Deno process's size at the fork."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_info(source):
    """The fields that open every script's JSON line: torch's version, threads and BLAS, and where
    the weights came from."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": blas_library(),
        "weights": source,
    }


def timed(fn, reps, inner, units, warm_up=None):
    """Runs warm_up (default fn) once, then `reps` samples of `inner` calls of fn; units per second
    each."""
    (warm_up or fn)()
    samples = []
    for _ in range(reps):
        begin = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append(units * inner / (time.perf_counter() - begin))
    return samples
