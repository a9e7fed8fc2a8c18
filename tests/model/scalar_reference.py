"""SPEC §3 as scalar Python loops: an independent reference for the golden model's tests."""

from __future__ import annotations

import numpy as np

from stepvit.model.export import Export


def reference_run(export: Export, image: np.ndarray,
                  mask: np.ndarray) -> tuple[list, dict, int]:
    """SPEC §3 written as scalar Python loops (direct pixel products, Q·Kᵀ form).

    Returns the logits, the spikes per layer and step, and the accumulates counted here
    from their definition (one per selected weight; K·V pairs one each; a Q spike selects
    a KV row of head_dim values), independently of the golden model's bookkeeping.
    """
    arch = export.arch
    p, n_tokens, dim, heads = arch["patch"], arch["tokens"], arch["dim"], arch["heads"]
    hd, depth = dim // heads, arch["depth"]
    k_shift, reset = export.neuron["leak_shift"], export.neuron["reset"]
    w = {key: value.astype(int).tolist() for key, value in export.arrays.items()}
    theta = {key: value.tolist() for key, value in export.thresholds.items()}
    channels, height, width = arch["image_shape"]
    patches = [
        [int(image[c, py * p + ky, px * p + kx])
         for c in range(channels) for ky in range(p) for kx in range(p)]
        for py in range(height // p) for px in range(width // p)
    ]
    embed_current = [
        [sum(wk * xk for wk, xk in zip(w["embed.weight"][o], patches[n])) + w["embed.bias"][n][o]
         for o in range(dim)]
        for n in range(n_tokens)
    ]
    membrane = {name: [[0] * len(theta[name]) for _ in range(n_tokens)] for name in theta}
    spikes = {name: [0] * export.t_max for name in theta}
    ac_ops = 0

    def lif(name: str, current: list, step: int) -> list:
        out = []
        for n in range(n_tokens):
            row = []
            for o, threshold in enumerate(theta[name]):
                v = membrane[name][n][o]
                h = v - (v >> k_shift) + current[n][o]
                fired = h >= threshold
                membrane[name][n][o] = (0 if reset == "hard" else h - threshold) if fired else h
                row.append(int(fired))
            out.append(row)
        spikes[name][step] += sum(map(sum, out))
        return out

    def linear(key: str, inputs: list) -> list:
        nonlocal ac_ops
        weight, bias = w[f"{key}.weight"], w[f"{key}.bias"]
        ac_ops += sum(sum(row) for row in inputs) * len(weight)
        return [[sum(wo[j] for j in range(len(row)) if row[j]) + bias[o]
                 for o, wo in enumerate(weight)] for row in inputs]

    def add(a: list, b: list) -> list:
        return [[x + y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]

    counts = [0] * dim
    for step in range(export.t_max):
        if mask[0][step]:
            stream = [[s * e for s, e in zip(row, w["stream_spike"])]
                      for row in lif("embed", embed_current, step)]
        else:
            stream = [[0] * dim for _ in range(n_tokens)]
        for block in range(depth):
            pre = f"blocks.{block}"
            if mask[1 + 2 * block][step]:
                s = lif(f"{pre}.attn.in", stream, step)
                q, k, v = (lif(f"{pre}.attn.{x}", linear(f"{pre}.attn.{x}", s), step)
                           for x in "qkv")
                y = [[0] * dim for _ in range(n_tokens)]
                for h in range(heads):
                    cols = range(h * hd, (h + 1) * hd)
                    ac_ops += sum(sum(k[m][i] for i in cols) * sum(v[m][j] for j in cols)
                                  for m in range(n_tokens))
                    ac_ops += sum(q[n][i] for n in range(n_tokens) for i in cols) * hd
                    for n in range(n_tokens):
                        for m in range(n_tokens):
                            overlap = sum(q[n][i] & k[m][i] for i in cols)
                            for j in cols:
                                y[n][j] += overlap * v[m][j]
                a = lif(f"{pre}.attn.attn", y, step)
                stream = add(stream, linear(f"{pre}.attn.proj", a))
            if mask[2 + 2 * block][step]:
                s = lif(f"{pre}.mlp.in", stream, step)
                hidden = lif(f"{pre}.mlp.fc1", linear(f"{pre}.mlp.fc1", s), step)
                stream = add(stream, linear(f"{pre}.mlp.fc2", hidden))
        if mask[-1][step]:
            head = lif("head.in", stream, step)
            counts = [c + sum(head[n][o] for n in range(n_tokens)) for o, c in enumerate(counts)]
            ac_ops += sum(map(sum, head)) * len(w["head.weight"])
    logits = [sum(c * wc for c, wc in zip(counts, row)) + b
              for row, b in zip(w["head.weight"], w["head.bias"])]
    return logits, spikes, ac_ops
