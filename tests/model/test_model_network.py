import pytest
import torch

from stepvit.model.metrics import ac_ops_per_image, measure
from stepvit.model.network import SpikingViT, straight_through_mask


def images(count=6):
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (count, 1, 8, 8), generator=generator, dtype=torch.uint8)


def small_model(**overrides):
    """An untrained model whose BN statistics are those of a batch, so every layer spikes."""
    torch.manual_seed(0)
    arguments = {"image_shape": (1, 8, 8), "patch": 2, "dim": 8, "heads": 2, "depth": 2,
                 "mlp_dim": 16, "num_classes": 10, "t_max": 4}
    arguments.update(overrides)
    model = SpikingViT(**arguments)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.momentum = None  # running statistics = the plain average of the batches
            module.reset_running_stats()
    with torch.no_grad():
        model(images(32))
    return model


def test_state_dict_names_follow_spec():
    names = set(small_model().state_dict())
    for name in ("embed.conv.weight", "embed.conv.bias", "embed.bn.running_mean", "embed.pos",
                 "blocks.1.attn.q.linear.weight", "blocks.0.attn.proj.bn.weight",
                 "blocks.1.mlp.fc2.linear.weight", "blocks.0.mlp.fc1.bn.running_var",
                 "head.linear.weight", "head.linear.bias", "timestep_scores"):
        assert name in names
    assert not any(name.endswith("linear.bias") and not name.startswith("head") for name in names)
    model = small_model()
    assert model.state_dict()["timestep_scores"].shape == (6, 4)
    assert model.state_dict()["embed.pos"].shape == (16, 8)
    assert model.module_names() == ["embed", "blocks.0.attn", "blocks.0.mlp",
                                    "blocks.1.attn", "blocks.1.mlp", "head"]


def test_straight_through_mask_gradient_is_sigmoid_derivative():
    scores = torch.tensor([-2.0, -0.1, 0.3, 1.5], requires_grad=True)
    weights = torch.tensor([1.0, -2.0, 3.0, 0.5])
    mask = straight_through_mask(scores)
    (mask * weights).sum().backward()
    sigmoid = torch.sigmoid(scores.detach())
    assert mask.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert torch.allclose(scores.grad, weights * sigmoid * (1 - sigmoid))


def test_network_scores_get_mask_gradient_times_sigmoid_derivative():
    model = small_model().eval()
    with torch.no_grad():
        model.timestep_scores.copy_(torch.linspace(-1.5, 2.0, 24).reshape(6, 4))
    batch = images()
    model(batch).square().sum().backward()
    score_gradient = model.timestep_scores.grad.clone()
    mask = (model.timestep_scores.detach() > 0).float().requires_grad_(True)
    model(batch, masks=mask).square().sum().backward()
    sigmoid = torch.sigmoid(model.timestep_scores.detach())
    assert mask.grad.abs().sum() > 0
    assert torch.allclose(score_gradient, mask.grad * sigmoid * (1 - sigmoid), atol=1e-6)


def test_masked_module_is_silent_and_saves_work():
    model = small_model().eval()
    all_active = torch.ones(6, 4)
    masked = all_active.clone()
    masked[2, 1:] = 0  # blocks.0.mlp only at step 0
    masked[5, 0] = 0   # head skips step 0
    with torch.no_grad():
        full = model.trace(images(), masks=all_active)
        cut = model.trace(images(), masks=masked)
    for layer in ("blocks.0.mlp.in", "blocks.0.mlp.fc1"):
        assert full.spikes[layer][:, 1:].sum() > 0
        assert cut.spikes[layer][:, 1:].sum() == 0
        assert torch.equal(cut.spikes[layer][:, 0], full.spikes[layer][:, 0])
    assert cut.spikes["head.in"][:, 0].sum() == 0
    assert torch.equal(cut.masks, masked.long())
    # unchanged before the mask bites: embed and block 0 attention see the same inputs
    assert torch.equal(cut.spikes["blocks.0.attn.q"], full.spikes["blocks.0.attn.q"])
    full_work = ac_ops_per_image(model, full.spikes, full.kv_pairs)
    cut_work = ac_ops_per_image(model, cut.spikes, cut.kv_pairs)
    assert (cut_work < full_work).all()


def test_fully_masked_network_emits_nothing():
    model = small_model().eval()
    with torch.no_grad():
        trace = model.trace(images(), masks=torch.zeros(6, 4))
    assert all(counts.sum() == 0 for counts in trace.spikes.values())
    assert ac_ops_per_image(model, trace.spikes, trace.kv_pairs).sum() == 0
    # only the head bias is left: every image gets the same logits
    assert torch.allclose(trace.logits, model.head.linear.bias.expand_as(trace.logits))


def test_ac_ops_match_a_count_by_hand():
    model = small_model(depth=1).eval()
    with torch.no_grad():
        trace = model.trace(images(2))
    spikes = {name: counts.sum(dim=1) for name, counts in trace.spikes.items()}
    dim, mlp_dim, head_dim, classes = 8, 16, 4, 10
    by_hand = (spikes["blocks.0.attn.in"] * 3 * dim + trace.kv_pairs["blocks.0.attn"].sum(1)
               + spikes["blocks.0.attn.q"] * head_dim + spikes["blocks.0.attn.attn"] * dim
               + spikes["blocks.0.mlp.in"] * mlp_dim + spikes["blocks.0.mlp.fc1"] * dim
               + spikes["head.in"] * classes)
    assert torch.equal(ac_ops_per_image(model, trace.spikes, trace.kv_pairs), by_hand)
    spikes["head.in"] = spikes["head.in"] + 1  # one more head spike: K more accumulates
    corrupted = {name: counts.unsqueeze(1) for name, counts in spikes.items()}
    assert not torch.equal(ac_ops_per_image(model, corrupted, trace.kv_pairs), by_hand)


def test_trace_records_the_forward_pass_without_changing_it():
    model = small_model().eval()
    with torch.no_grad():
        logits = model(images(), masks=torch.ones(6, 4))
        trace = model.trace(images(), masks=torch.ones(6, 4))
    assert isinstance(logits, torch.Tensor) and torch.equal(trace.logits, logits)
    assert list(trace.spikes) == model.layer_names()
    assert list(trace.kv_pairs) == ["blocks.0.attn", "blocks.1.attn"]
    # the monitor is gone once the trace is taken: a later forward records nothing
    assert not any(layer._forward_hooks for layer in model.lif_layers().values())


def test_kv_pairs_count_key_value_coincidences():
    model = small_model(depth=1).eval()
    with torch.no_grad():
        trace = model.trace(images(1))
    assert trace.kv_pairs["blocks.0.attn"].shape == (1, 4)
    assert (trace.kv_pairs["blocks.0.attn"] <= 16 * 2 * 4 * 4).all()


def test_penalty_is_mean_expected_active_steps():
    model = small_model()
    with torch.no_grad():
        model.timestep_scores.zero_()
    assert float(model.penalty().detach()) == pytest.approx(2.0)  # 4 steps x sigmoid(0)


def test_measure_reports_work_and_steps():
    model = small_model()
    labels = torch.zeros(6, dtype=torch.long)
    with torch.no_grad():
        model.timestep_scores[0, 2:] = -1.0
    metrics = measure(model, images(), labels, batch_size=4)
    assert metrics["timesteps_per_module"]["embed"] == 2
    assert metrics["avg_timesteps"] == pytest.approx((2 + 4 * 5) / 6)
    assert metrics["timesteps_per_block"] == [4, 4]
    assert metrics["mac_ops"] == 16 * 8 * 1 * 2 * 2
    assert 0 < metrics["ac_ops"] < metrics["dense_ac_ops"]
    assert metrics["energy_uj"] == pytest.approx(
        (4.6 * metrics["mac_ops"] + 0.9 * metrics["ac_ops"]) * 1e-6)
    assert set(metrics["spike_rate"]) == set(model.layer_names())


def test_masks_of_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="masks must have shape"):
        small_model()(images(), masks=torch.ones(6, 3))
    model = small_model()
    with pytest.raises(ValueError, match="masks must have shape"):
        model.trace(images(), masks=torch.ones(6, 3))
    # a refused trace takes its spike monitor with it
    assert not any(layer._forward_hooks for layer in model.lif_layers().values())


def step_by_step_reference(model, batch, masks):
    """SPEC.md section 2 written as one loop over t, from the model's own layers."""
    def lif(neuron, key, current, active):
        fired, membranes[key] = neuron.step(current, membranes.get(key), active)
        counts[key] = counts.get(key, 0) + float((active * fired).sum())
        return active * fired

    membranes, counts = {}, {}
    current = model.embed(batch.float() / 255.0)
    head_counts = 0
    for t in range(model.t_max):
        stream = lif(model.embed_neuron, "embed", current, masks[0, t])
        for index, block in enumerate(model.blocks):
            attn, mlp = block.attn, block.mlp
            active = masks[1 + 2 * index, t]
            prefix = f"blocks.{index}.attn"
            s = lif(attn.neurons["in"], f"{prefix}.in", stream, active)
            q, k, v = (lif(attn.neurons[name], f"{prefix}.{name}", getattr(attn, name)(s), active)
                       for name in ("q", "k", "v"))
            q, k, v = (attn.split_heads(x) for x in (q, k, v))
            mixed = ((q @ k.transpose(-2, -1)) @ v / 8).transpose(1, 2).flatten(2)
            a = lif(attn.neurons["attn"], f"{prefix}.attn", mixed, active)
            stream = stream + active * attn.proj(a)
            active = masks[2 + 2 * index, t]
            prefix = f"blocks.{index}.mlp"
            s = lif(mlp.neurons["in"], f"{prefix}.in", stream, active)
            h = lif(mlp.neurons["fc1"], f"{prefix}.fc1", mlp.fc1(s), active)
            stream = stream + active * mlp.fc2(h)
        head_counts = head_counts + lif(model.head.neuron, "head.in", stream,
                                        masks[-1, t]).sum(dim=1)
    return model.head.linear(head_counts / (model.tokens * model.t_max)), counts


def test_layer_by_layer_equals_the_step_loop_of_the_spec():
    model = small_model().eval()
    masks = (torch.rand(6, 4, generator=torch.Generator().manual_seed(5)) > 0.3).float()
    masks[:, 0] = 1.0
    batch = images()
    with torch.no_grad():
        trace = model.trace(batch, masks=masks)
        logits, counts = step_by_step_reference(model, batch, masks)
    assert torch.allclose(trace.logits, logits, atol=1e-5)
    assert {name: float(value.sum()) for name, value in trace.spikes.items()} == counts
    with torch.no_grad():
        corrupted = masks.clone()
        corrupted[3, 2] = 1.0 - corrupted[3, 2]  # one mask bit flipped: the check must see it
        other_logits, other_counts = step_by_step_reference(model, batch, corrupted)
    assert not (torch.allclose(trace.logits, other_logits, atol=1e-5)
                and other_counts == counts)
