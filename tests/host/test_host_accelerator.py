"""The accelerator interface: packing, the golden backend, and the pynq backend on a test double.

The pynq double (``pynq_double.py``) answers every frame with the golden model's packet, so
the ``test_pynq_backend_*`` tests compare the golden model with itself through the driver:
they pin the driver's own work (packing, registers, masks, buffers, DMA waits and error
paths), not the accelerator's arithmetic, which ``tests/sim`` checks against the RTL.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from stepvit.host.accelerator import check_images, open_accelerator
from stepvit.host.backend_pynq import DMA_MM2S_CONTROL, DMA_SOFT_RESET
from stepvit.model.export.errors import DeviceTimeout, StepvitError
from stepvit.rtl.protocol import (
    STATUS_FRAME_ERROR,
    image_words,
    mask_register_values,
    offset,
    pack_images,
    pack_results,
    result_words,
    unpack_images,
    unpack_results,
)


def test_pack_images_is_four_little_endian_pixels_a_word():
    images = np.arange(1, 7, dtype=np.uint8).reshape(1, 1, 2, 3)
    frames = pack_images(images)
    assert frames.dtype == np.uint32
    assert frames.tolist() == [[0x04030201, 0x00000605]]
    assert np.array_equal(unpack_images(frames, [1, 2, 3]), images)


def test_pack_images_fills_a_preallocated_buffer():
    images = np.full((2, 1, 2, 2), 7, dtype=np.uint8)
    buffer = np.zeros((4, 1), dtype=np.uint32)
    pack_images(images, out=buffer)
    assert buffer[:, 0].tolist() == [0x07070707, 0x07070707, 0, 0]


def test_unpack_results_sign_extends_logits_and_marks_frame_errors():
    packets = pack_results(np.array([[-3, 5], [0, 1]]), np.array([1, -1]),
                           np.array([77, 78]), np.array([[4, 2, 9], [0, 0, 0]]))
    assert packets[1, 2] == 0xFFFFFFFF
    logits, predicted, cycles, spikes = unpack_results(packets, num_classes=2)
    assert logits.tolist() == [[-3, 5], [0, 1]]
    assert predicted.tolist() == [1, -1]
    assert cycles.tolist() == [77, 78]
    assert spikes.tolist() == [[4, 2, 9], [0, 0, 0]]


def test_result_packet_length_follows_the_spec(export):
    depth = export.arch["depth"]
    assert result_words(export) == export.arch["num_classes"] + 2 + 7 * depth + 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 1, 4, 6), dtype=np.float32), "expected dtype uint8, got float32"),
        (np.zeros((2, 1, 6, 4), dtype=np.uint8), "expected shape [B, 1, 4, 6], got [2, 1, 6, 4]"),
        (np.zeros((1, 4, 6), dtype=np.uint8), "expected shape [B, 1, 4, 6], got [1, 4, 6]"),
        (np.zeros((0, 1, 4, 6), dtype=np.uint8), "the batch is empty"),
        ([[0]], "expected a numpy uint8 array, got list"),
    ],
)
def test_check_images_refuses_with_a_clear_message(bad, message):
    with pytest.raises(StepvitError) as error:
        check_images(bad, [1, 4, 6])
    assert message in str(error.value)


def test_golden_backend_runs_the_budget(export, images):
    with open_accelerator("golden", export) as accel:
        full = accel.infer(images)
        accel.set_budget(1)
        capped = accel.infer(images)
    assert full.cycles is None
    assert full.logits.shape == (5, export.arch["num_classes"])
    assert full.spike_totals.shape == (5, len(export.layer_names()))
    assert capped.spike_totals.sum() <= full.spike_totals.sum()
    with pytest.raises(StepvitError, match="closed"):
        accel.infer(images)


def test_unknown_backend_and_bad_budget_are_refused(export):
    with pytest.raises(StepvitError, match="unknown backend 'fpga'"):
        open_accelerator("fpga", export)
    with open_accelerator("golden", export) as accel, pytest.raises(StepvitError,
                                                                    match="at least 1"):
        accel.set_budget(0)


def test_pynq_backend_matches_golden_at_every_budget(export, images, board, overlay_dir):
    golden = open_accelerator("golden", export)
    with open_accelerator("pynq", export, overlay=overlay_dir) as accel:
        for budget in (None, *range(1, export.t_max + 1)):
            accel.set_budget(budget)
            golden.set_budget(budget)
            expected, result = golden.infer(images), accel.infer(images)
            assert np.array_equal(result.logits, expected.logits), budget
            assert np.array_equal(result.predicted, expected.predicted), budget
            assert np.array_equal(result.spike_totals, expected.spike_totals), budget
            work = golden.last_work["ac_ops"]
            assert np.array_equal(result.cycles, 1000 + work), budget
            assert set(result.stage_seconds) == {"pack", "copy_in", "execute", "copy_out",
                                                 "unpack"}
    assert board.allocated and all(buffer.freed for buffer in board.allocated)


def test_pynq_backend_sees_a_corrupted_packet(export, images, board, overlay_dir):
    board.corrupt_logit = True
    with open_accelerator("pynq", export, overlay=overlay_dir) as accel:
        result = accel.infer(images)
    expected = open_accelerator("golden", export).infer(images)
    assert not np.array_equal(result.logits, expected.logits)
    assert np.array_equal(result.logits[:, 0], expected.logits[:, 0] + 1)


def test_pynq_backend_writes_capped_masks(export, board, overlay_dir):
    with open_accelerator("pynq", export, overlay=overlay_dir) as accel:
        accel.set_budget(1)
        for index, row in enumerate(export.budget_mask(1)):
            assert board.registers[offset(f"MASK{index}")] == mask_register_values([row])[0]
            assert bin(board.registers[offset(f"MASK{index}")]).count("1") == 1
        accel.set_budget(None)
        assert np.array_equal(board.masks(), export.timestep_mask)


def test_pynq_backend_streams_batches_larger_than_its_buffers(export, images, board,
                                                             overlay_dir):
    from stepvit.host.backend_pynq import PynqAccelerator

    with PynqAccelerator(export, overlay_dir, max_batch=2) as accel:
        result = accel.infer(images)
    expected = open_accelerator("golden", export).infer(images)
    assert np.array_equal(result.logits, expected.logits)
    assert [buffer.shape[0] for buffer in board.allocated] == [2, 2]


def test_pynq_backend_refuses_a_config_hash_mismatch(export, board, overlay_dir):
    board.config_hash = export.config_hash ^ 0x1
    with pytest.raises(StepvitError) as error:
        open_accelerator("pynq", export, overlay=overlay_dir)
    assert f"0x{export.config_hash ^ 0x1:08x}" in str(error.value)
    assert "rebuild the overlay" in str(error.value)
    assert not board.allocated


@pytest.mark.parametrize("missing", ["stepvit.bit", "stepvit.hwh"])
def test_pynq_backend_refuses_a_missing_overlay_file(export, board, overlay_dir, missing):
    (overlay_dir / missing).unlink()
    with pytest.raises(StepvitError, match=f"{missing} is missing"):
        open_accelerator("pynq", export, overlay=overlay_dir)


def test_pynq_backend_refuses_bad_images(export, board, overlay_dir):
    with open_accelerator("pynq", export, overlay=overlay_dir) as accel:
        with pytest.raises(StepvitError, match="dtype uint8"):
            accel.infer(np.zeros((1, 1, 4, 6), dtype=np.int16))
        with pytest.raises(StepvitError, match="expected shape"):
            accel.infer(np.zeros((1, 3, 4, 6), dtype=np.uint8))


def test_pynq_backend_times_out_on_a_dma_that_never_finishes(export, images, board,
                                                             overlay_dir):
    board.never_idle = True
    accel = open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=0.2)
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match="did not finish images 0-4 within 0.2 s"):
        accel.infer(images)
    assert time.monotonic() - start < 2.0
    assert (DMA_MM2S_CONTROL, DMA_SOFT_RESET) in board.dma_control_writes
    assert all(buffer.freed for buffer in board.allocated)
    with pytest.raises(StepvitError, match="closed"):
        accel.infer(images)


def test_pynq_backend_frees_buffers_when_the_caller_fails(export, board, overlay_dir):
    with pytest.raises(KeyError), open_accelerator("pynq", export, overlay=overlay_dir):
        raise KeyError("the caller failed")
    assert board.allocated and all(buffer.freed for buffer in board.allocated)


def test_pynq_backend_without_a_device_fails_in_one_line(export, board, overlay_dir):
    board.no_device = True
    with pytest.raises(StepvitError) as error:
        open_accelerator("pynq", export, overlay=overlay_dir)
    assert "No Devices Found" in str(error.value)
    assert "\n" not in str(error.value)


def test_real_pynq_off_board_fails_in_one_line(export, overlay_dir):
    pytest.importorskip("pynq")
    with pytest.raises(StepvitError) as error:
        open_accelerator("pynq", export, overlay=overlay_dir)
    assert "runs on a PYNQ board" in str(error.value)


def test_pynq_backend_reports_and_clears_a_dropped_frame(export, images, board, overlay_dir):
    board.dropped_frames = {1}
    with open_accelerator("pynq", export, overlay=overlay_dir, max_batch=1) as accel:
        result = accel.infer(images)
        assert result.predicted[1] == -1
        assert board.registers[offset("STATUS")] & STATUS_FRAME_ERROR == 0
        again = accel.infer(images)
    expected = open_accelerator("golden", export).infer(images)
    assert np.array_equal(np.delete(result.predicted, 1), np.delete(expected.predicted, 1))
    assert np.array_equal(again.predicted, expected.predicted)


def test_a_dropped_frame_inside_a_batch_ends_its_result_transfer(export, images, board,
                                                                 overlay_dir):
    """Its error packet carries TLAST: the S2MM transfer stops short, and the driver says so."""
    board.dropped_frames = {1}
    accel = open_accelerator("pynq", export, overlay=overlay_dir)
    packet_bytes = 4 * accel._packet_words
    with pytest.raises(StepvitError, match=(
            rf"ended the result transfer of images 0-4 after {2 * packet_bytes} bytes, not "
            rf"{5 * packet_bytes}: a frame was dropped")):
        accel.infer(images)
    assert all(buffer.freed for buffer in board.allocated)


def test_pynq_buffers_hold_a_batch_back_to_back(export, images, board, overlay_dir):
    # 6 words a frame: a batch's frames follow each other without padding
    with open_accelerator("pynq", export, overlay=overlay_dir, max_batch=3) as accel:
        result = accel.infer(images)
    frame_words = image_words(export.arch["image_shape"])
    assert [buffer.shape for buffer in board.allocated] == [
        (3, frame_words), (3, accel._packet_words)]
    assert board.dma.transfers == [(3, 3), (2, 2)]
    expected = open_accelerator("golden", export).infer(images)
    assert np.array_equal(result.predicted, expected.predicted)


@pytest.mark.parametrize("max_batch", [0, 2**16])
def test_pynq_backend_refuses_a_batch_the_hardware_cannot_take(export, board, overlay_dir,
                                                               max_batch):
    with pytest.raises(StepvitError, match=r"max_batch must be 1\.\.65535"):
        open_accelerator("pynq", export, overlay=overlay_dir, max_batch=max_batch)


def test_pynq_backend_refuses_a_timeout_that_cannot_pass(export, board, overlay_dir):
    with pytest.raises(StepvitError, match="DMA timeout must be positive, got 0"):
        open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=0)
    assert not board.allocated
