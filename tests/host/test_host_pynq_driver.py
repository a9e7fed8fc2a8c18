"""The pynq driver's bring-up and failure paths, on the pynq double (``pynq_double.py``).

Each test sets one knob of the double: a board process without root or the PYNQ
environment, a DMA that never starts, a result that never comes, a slow DMA, a channel
that reports an error or refuses a transfer. Time is the double's virtual clock (every
``monotonic()`` poll is 1 ms), so the deadlines are exact and the tests fast. Where a test
compares results with the golden model it compares the golden model with itself (the
double computes with it): it checks the driver, not the hardware.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from pynq_double import FakeBoard

from stepvit.host import backend_pynq
from stepvit.host.accelerator import open_accelerator
from stepvit.host.backend_pynq import DMA_MM2S_CONTROL, DMA_SOFT_RESET
from stepvit.model.export.errors import DeviceTimeout, StepvitError

TIMEOUT_S = 0.2


@pytest.fixture
def virtual_time(board: FakeBoard, monkeypatch: pytest.MonkeyPatch) -> FakeBoard:
    """The double, with the driver's clock replaced by the double's virtual one."""
    monkeypatch.setattr(backend_pynq, "time", board.clock)
    return board


def assert_reset_and_freed(board: FakeBoard) -> None:
    assert (DMA_MM2S_CONTROL, DMA_SOFT_RESET) in board.dma_control_writes
    assert board.allocated and all(buffer.freed for buffer in board.allocated)


SHELL_HINT = ("on the board run stepvit from a root login shell, `sudo -i`, which sources the "
              "PYNQ environment")


def test_without_root_the_driver_says_so(export, board, overlay_dir,
                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(StepvitError, match=r"runs on a PYNQ board, as root with the board's "
                                           r"environment; this process lacks root \(running as "
                                           r"uid 1000\): on the board run stepvit from a root "
                                           r"login shell, `sudo -i`"):
        open_accelerator("pynq", export, overlay=overlay_dir)
    assert not board.allocated


def test_without_xilinx_xrt_the_driver_says_so(export, board, overlay_dir,
                                               monkeypatch: pytest.MonkeyPatch):
    """What plain `sudo stepvit` gives: root, but the PYNQ environment dropped."""
    monkeypatch.delenv("XILINX_XRT")
    with pytest.raises(StepvitError) as error:
        open_accelerator("pynq", export, overlay=overlay_dir)
    message = str(error.value)
    assert "this process lacks XILINX_XRT (the PYNQ environment): " + SHELL_HINT in message
    assert "plain `sudo stepvit` drops XILINX_XRT" in message
    assert "\n" not in message
    assert not board.allocated


def test_without_root_and_xilinx_xrt_both_are_named(export, board, overlay_dir,
                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XILINX_XRT", "")
    with pytest.raises(StepvitError, match=r"lacks root \(running as uid 1000\) and XILINX_XRT "
                                           r"\(the PYNQ environment\)"):
        open_accelerator("pynq", export, overlay=overlay_dir)


def test_a_permission_error_while_loading_is_one_line(export, board, overlay_dir):
    board.load_error = PermissionError(13, "Permission denied",
                                       "/sys/class/fpga_manager/fpga0/firmware")
    with pytest.raises(StepvitError, match=r"cannot load overlay .*stepvit.bit: \[Errno 13\] "
                                           r"Permission denied"):
        open_accelerator("pynq", export, overlay=overlay_dir)


def test_a_dma_that_never_starts_times_out_before_pynq_spins_on_it(export, virtual_time,
                                                                   overlay_dir):
    """pynq's DMA driver would wait forever on a halted DMA: the driver's own deadline ends it."""
    board = virtual_time
    board.dma_stuck_halted = True
    with pytest.raises(DeviceTimeout, match=(
            r"DMA axi_dma_0 did not start within 0.2 s \(MM2S \(image in\) DMASR 0x00000001, "
            r"S2MM \(result out\) DMASR 0x00000001: halted\): its clock is stopped or its "
            r"reset held")):
        open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=TIMEOUT_S)
    assert board.dma is None and not board.allocated
    assert TIMEOUT_S <= board.clock.now < TIMEOUT_S + 0.01


def test_a_result_that_stalls_at_image_2_times_out_naming_image_2(export, images, virtual_time,
                                                                  overlay_dir):
    """The image goes in (MM2S finishes) but its result never comes out (S2MM never does)."""
    board = virtual_time
    board.stalled_result = 2
    accel = open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=TIMEOUT_S,
                             max_batch=1)
    with pytest.raises(DeviceTimeout, match=r"DMA S2MM \(result out\) did not finish image 2 "
                                            r"within 0.2 s"):
        accel.infer(images)
    assert board.dma.sendchannel.frame == 2
    assert_reset_and_freed(board)


@pytest.mark.parametrize("seconds_per_image", [0.15, 0.19])
def test_every_image_has_its_own_deadline(export, images, virtual_time, overlay_dir,
                                          seconds_per_image: float):
    """One image per transfer (``max_batch=1``): five images of 0.15 s each take 0.75 s in
    all, each within 0.2 s, so no timeout.

    The results are compared with the golden model, which computed them: the golden model
    with itself.
    """
    board = virtual_time
    board.seconds_per_image = seconds_per_image
    with open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=TIMEOUT_S,
                          max_batch=1) as accel:
        result = accel.infer(images)
    assert board.clock.now >= len(images) * seconds_per_image
    expected = open_accelerator("golden", export).infer(images)
    assert np.array_equal(result.logits, expected.logits)


def test_an_image_slower_than_the_timeout_times_out(export, images, virtual_time, overlay_dir):
    board = virtual_time
    board.seconds_per_image = 0.25
    accel = open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=TIMEOUT_S,
                             max_batch=1)
    with pytest.raises(DeviceTimeout, match=r"DMA S2MM \(result out\) did not finish image 0 "
                                            r"within 0.2 s"):
        accel.infer(images)
    assert_reset_and_freed(board)


@pytest.mark.parametrize(
    ("channel", "frame", "direction"),
    [("MM2S", 1, r"MM2S \(image in\)"), ("S2MM", 3, r"S2MM \(result out\)")],
)
def test_a_channel_error_names_the_direction_and_image(export, images, virtual_time, overlay_dir,
                                                       channel: str, frame: int,
                                                       direction: str):
    """A DMA error (here a decode error, the DMA's word for an unmapped address) is not a
    timeout: it is reported as it happens, with the status register decoded."""
    board = virtual_time
    board.channel_error = (channel, frame)
    accel = open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=TIMEOUT_S,
                             max_batch=1)
    with pytest.raises(StepvitError, match=(
            rf"^DMA {direction} reported an error on image {frame} \(DMASR 0x00000041: "
            rf"DMADecErr \(no memory at the buffer's address: is the HP port connected\?\)\); "
            rf"the DMA was reset and the buffers freed$")):
        accel.infer(images)
    assert board.clock.now < TIMEOUT_S * 2
    assert_reset_and_freed(board)
    with pytest.raises(StepvitError, match="closed"):
        accel.infer(images)


def test_a_transfer_pynq_refuses_names_the_direction_and_image(export, images, virtual_time,
                                                                overlay_dir):
    """pynq raises RuntimeError from transfer() on a halted channel: one line, DMA reset."""
    board = virtual_time
    board.refused_transfer = ("S2MM", 2)
    accel = open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=TIMEOUT_S,
                             max_batch=1)
    with pytest.raises(StepvitError, match=(
            r"^DMA S2MM \(result out\) refused image 2: DMA channel not started \(DMASR "
            r"0x00000003\); the DMA was reset and the buffers freed$")):
        accel.infer(images)
    assert_reset_and_freed(board)


def test_a_batch_has_one_deadline_and_one_transfer_each_way(export, images, virtual_time,
                                                            overlay_dir):
    """Five images in one batch: one MM2S and one S2MM transfer, BATCH 5, one deadline."""
    board = virtual_time
    board.seconds_per_image = 0.03  # 0.15 s for the batch: within 0.2 s
    with open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=TIMEOUT_S) as accel:
        result = accel.infer(images)
    assert board.dma.transfers == [(len(images), len(images))]
    assert board.batch() == len(images)
    expected = open_accelerator("golden", export).infer(images)
    assert np.array_equal(result.logits, expected.logits)


def test_a_batch_slower_than_the_timeout_names_its_images(export, images, virtual_time,
                                                          overlay_dir):
    board = virtual_time
    board.seconds_per_image = 0.05  # 0.25 s for the batch of five
    accel = open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=TIMEOUT_S)
    with pytest.raises(DeviceTimeout, match=r"DMA S2MM \(result out\) did not finish images "
                                            r"0-4 within 0.2 s"):
        accel.infer(images)
    assert_reset_and_freed(board)
