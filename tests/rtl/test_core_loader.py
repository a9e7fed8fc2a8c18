"""The patch loader against a numpy reshaping of the image (SPEC.md section 1 order)."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from stepvit.rtl.patch_loader import PatchLoader
from stepvit.rtl.protocol import pack_images


def patches_of(image, patch):
    channels, height, width = image.shape
    grid = image.reshape(channels, height // patch, patch, width // patch, patch)
    return grid.transpose(1, 3, 0, 2, 4).reshape(-1, channels * patch * patch)


def load(image, patch):
    channels, height, width = image.shape
    loader = PatchLoader(image_shape=image.shape, patch=patch)
    tokens, patch_len = (height // patch) * (width // patch), channels * patch * patch
    m = Module()
    m.submodules.loader = loader
    words = pack_images(image[None])[0].tolist()
    m.submodules.image = image_buffer = Memory(shape=32, depth=len(words), init=words)
    m.submodules.patches = patch_mem = Memory(shape=8 * patch_len, depth=tokens, init=[])
    read, write = image_buffer.read_port(), patch_mem.write_port(granularity=8)
    m.d.comb += [
        read.addr.eq(loader.img_addr), loader.img_data.eq(read.data),
        write.addr.eq(loader.patch_addr), write.data.eq(loader.patch_data),
        write.en.eq(loader.patch_enable),
    ]
    result = {}

    async def testbench(ctx):
        ctx.set(loader.start, 1)
        await ctx.tick()
        ctx.set(loader.start, 0)
        cycles = 1
        while not ctx.get(loader.done):
            await ctx.tick()
            cycles += 1
        await ctx.tick()
        result["cycles"] = cycles
        result["patches"] = np.array(
            [[ctx.get(patch_mem.data[token]) >> (8 * k) & 0xFF for k in range(patch_len)]
             for token in range(tokens)], dtype=np.uint8)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return result


@pytest.mark.parametrize("shape, patch", [((1, 8, 8), 2), ((3, 4, 4), 2), ((3, 3, 3), 1),
                                          ((2, 6, 6), 3)])
def test_loader_writes_the_patches_in_spec_order(shape, patch):
    image = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    result = load(image, patch)
    np.testing.assert_array_equal(result["patches"], patches_of(image, patch))
    assert result["cycles"] == image.size + 1  # one pixel a cycle, plus the read latency


def test_loader_comparison_sees_one_wrong_pixel():
    image = np.random.default_rng(7).integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    expected = patches_of(image, 2)
    expected[1, 5] ^= 1
    assert not np.array_equal(load(image, 2)["patches"], expected)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_loader_refuses_a_patch_that_does_not_divide_the_image():
    with pytest.raises(ValueError, match=r"^patch must be a positive integer dividing 4x6, "
                                         r"not 4$"):
        PatchLoader(image_shape=(1, 4, 6), patch=4)
