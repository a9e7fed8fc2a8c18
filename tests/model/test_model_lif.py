import pytest
import torch

from stepvit.model.lif import LIFNeuron, reset_membrane, sigmoid_surrogate_spike


def run_steps(neuron, currents, actives=None):
    membrane = None
    spikes, membranes = [], []
    for step, current in enumerate(currents):
        active = 1.0 if actives is None else actives[step]
        spike, membrane = neuron.step(torch.tensor([current]), membrane, active)
        spikes.append(float(spike))
        membranes.append(float(membrane))
    return spikes, membranes


def test_hard_reset_by_hand():
    # h = v/2 + I: 0.6 -> 0.9 -> 1.05 (fire, v = 0) -> 1.5 (fire, v = 0)
    spikes, membranes = run_steps(LIFNeuron(leak_shift=1, reset="hard"), [0.6, 0.6, 0.6, 1.5])
    assert spikes == [0.0, 0.0, 1.0, 1.0]
    assert membranes == pytest.approx([0.6, 0.9, 0.0, 0.0])


def test_soft_reset_by_hand():
    # as above, but a spike subtracts the threshold: 1.05 -> 0.05; 0.025 + 1.5 -> 0.525
    spikes, membranes = run_steps(LIFNeuron(leak_shift=1, reset="soft"), [0.6, 0.6, 0.6, 1.5])
    assert spikes == [0.0, 0.0, 1.0, 1.0]
    assert membranes == pytest.approx([0.6, 0.9, 0.05, 0.525], abs=1e-6)


def test_leak_shift_two_keeps_three_quarters():
    # h = 0.75 v + I: 0.6 -> 1.05 fires one step earlier than with leak_shift 1
    spikes, membranes = run_steps(LIFNeuron(leak_shift=2, reset="hard"), [0.6, 0.6, 0.6])
    assert spikes == [0.0, 1.0, 0.0]
    assert membranes == pytest.approx([0.6, 0.0, 0.6])


def test_threshold_is_inclusive():
    spikes, _ = run_steps(LIFNeuron(), [1.0])
    assert spikes == [1.0]


def test_frozen_step_keeps_membrane():
    # step 1 is masked: no charge, no leak, no reset; the neuron says it would fire (the
    # network masks that spike) and keeps 0.9, which fires with the next 0.6
    spikes, membranes = run_steps(LIFNeuron(), [0.9, 5.0, 0.6], actives=[1.0, 0.0, 1.0])
    assert spikes == [0.0, 1.0, 1.0]
    assert membranes == pytest.approx([0.9, 0.9, 0.0])


def test_reset_rule_rejects_unknown():
    with pytest.raises(ValueError, match="reset rule"):
        reset_membrane(torch.zeros(1), torch.zeros(1), 1.0, "half")
    with pytest.raises(ValueError, match="reset must be"):
        LIFNeuron(reset="half")


def test_surrogate_gradient_is_scaled_sigmoid_derivative():
    x = torch.tensor([-0.5, 0.0, 0.25], requires_grad=True)
    spikes = sigmoid_surrogate_spike(x, alpha=4.0)
    spikes.sum().backward()
    sigmoid = torch.sigmoid(4.0 * x.detach())
    assert spikes.tolist() == [0.0, 1.0, 1.0]
    assert torch.allclose(x.grad, 4.0 * sigmoid * (1 - sigmoid))
