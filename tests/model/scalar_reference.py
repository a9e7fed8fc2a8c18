"""SPEC §3 and §5 as scalar Python loops: independent references for the model's tests."""

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


def conv_scalar(maps: list, weight: list, stride: int, padding: int) -> list:
    """``[Cout][H'][W']``: a zero-padded ``k x k`` convolution of ``[C][H][W]``, no bias."""
    height, width, kernel = len(maps[0]), len(maps[0][0]), len(weight[0][0])
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1

    def at(o: int, oy: int, ox: int) -> float:
        total = 0.0
        for c, channel in enumerate(maps):
            for ky in range(kernel):
                for kx in range(kernel):
                    y, x = oy * stride - padding + ky, ox * stride - padding + kx
                    if 0 <= y < height and 0 <= x < width:
                        total += weight[o][c][ky][kx] * channel[y][x]
        return total

    return [[[at(o, oy, ox) for ox in range(out_w)] for oy in range(out_h)]
            for o in range(len(weight))]


def max_pool_scalar(maps: list, kernel: int, stride: int, padding: int) -> list:
    """Max-pool of ``[C][H][W]`` over the window's positions inside the map (no padding value)."""
    height, width = len(maps[0]), len(maps[0][0])
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1
    return [[[max(channel[y][x]
                  for y in range(oy * stride - padding, oy * stride - padding + kernel)
                  for x in range(ox * stride - padding, ox * stride - padding + kernel)
                  if 0 <= y < height and 0 <= x < width)
              for ox in range(out_w)] for oy in range(out_h)] for channel in maps]


def batch_norm_scalar(maps: list, bn: dict) -> list:
    """Inference BatchNorm of ``[C][H][W]``: ``(v - mean) / sqrt(var + eps) * gamma + beta``."""
    return [[[(v - bn["mean"][c]) / (bn["var"][c] + bn["eps"]) ** 0.5 * bn["gamma"][c]
              + bn["beta"][c] for v in row] for row in channel] for c, channel in enumerate(maps)]


def reference_stem(modules: list[dict], image: list, masks: list, *, pool: dict,
                   leak_shift: int, reset: str) -> list:
    """SPEC §5's float stem as scalar loops: the tokens ``[T][N][D]`` of one image.

    ``modules``: per stem module in mask-row order (stages, then the RPE), its ``weight``
    ``[Cout][Cin][k][k]``, ``stride``, ``padding``, ``pool`` (none, before, after), ``rpe``
    (bool) and ``bn`` (``mean``, ``var``, ``gamma``, ``beta``, ``eps``); ``image``
    ``[C][H][W]`` pixels 0..255; ``masks`` the stem's mask rows ``[S][T]``.
    """
    geometry = (pool["kernel"], pool["stride"], pool["padding"])
    membranes: list = [None] * len(modules)
    constant = None
    tokens = []
    for step in range(len(masks[0])):
        spikes = [[[value / 255.0 for value in row] for row in channel] for channel in image]
        last = None
        for index, module in enumerate(modules):
            source = last if module["rpe"] else spikes
            if index == 0 and constant is not None:
                current = constant  # direct encoding: the image's current, once per image
            else:
                current = batch_norm_scalar(conv_scalar(source, module["weight"],
                                                        module["stride"], module["padding"]),
                                            module["bn"])
                if module["pool"] == "before":
                    current = max_pool_scalar(current, *geometry)
                if index == 0:
                    constant = current
            fired = _lif_maps(current, membranes, index, bool(masks[index][step]),
                              leak_shift, reset)
            if module["pool"] == "after":
                fired = max_pool_scalar(fired, *geometry)
            if module["rpe"]:
                spikes = [[[a + b for a, b in zip(ra, rb)] for ra, rb in zip(ca, cb)]
                          for ca, cb in zip(last, fired)]
            else:
                spikes = last = fired
        tokens.append([[spikes[c][y][x] for c in range(len(spikes))]
                       for y in range(len(spikes[0])) for x in range(len(spikes[0][0]))])
    return tokens


def _lif_maps(current: list, membranes: list, index: int, active: bool, leak_shift: int,
              reset: str) -> list:
    """One float LIF step (threshold 1) of a ``[C][H][W]`` layer; frozen when not active."""
    if membranes[index] is None:
        membranes[index] = [[[0.0] * len(row) for row in channel] for channel in current]
    out = []
    for channel, held in zip(current, membranes[index]):
        out_channel = []
        for row, held_row in zip(channel, held):
            out_row = []
            for x, value in enumerate(row):
                if not active:  # frozen: the membrane is kept, nothing fires
                    out_row.append(0.0)
                    continue
                charged = held_row[x] * (1.0 - 2.0 ** -leak_shift) + value
                fired = charged >= 1.0
                held_row[x] = (0.0 if reset == "hard" else charged - 1.0) if fired else charged
                out_row.append(float(fired))
            out_channel.append(out_row)
        out.append(out_channel)
    return out
