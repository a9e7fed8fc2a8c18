// The C ABI around the Verilated stepvit_accel: streams, registers and the clock, no
// Python per clock. Built by stepvit.sim.verilator into one shared library per design
// (keyed by the Verilog's hash) and loaded with ctypes; see sim/verilator.py for the
// Python side and the meaning of every argument.
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "Vstepvit_accel.h"
#include "verilated.h"
#if VM_TRACE_FST
#include "verilated_fst_c.h"
#endif

namespace {

// A host buffer the emulated DDR maps at a physical address (sv_ddr_map).
struct Region {
    uint64_t base;
    uint8_t* data;
    uint64_t size;
};

// One accepted read burst: its next beat's address, the beats left, the first beat's cycle.
struct Burst {
    uint64_t address;
    uint32_t beats;
    uint64_t ready_at;
};

// One accepted write burst: its next beat's address and the beats left; a beat outside
// every mapped buffer makes its response SLVERR.
struct WriteBurst {
    uint64_t address;
    uint32_t beats;
    bool error;
};

// A write response due from `ready_at`.
struct Response {
    uint64_t ready_at;
    uint8_t bresp;
};

struct Harness {
    std::unique_ptr<VerilatedContext> context;
    std::unique_ptr<Vstepvit_accel> top;
#if VM_TRACE_FST
    std::unique_ptr<VerilatedFstC> trace;
#endif
    uint64_t cycle = 0;
    // The emulated DDR behind m_axi_* (a weights-from-DDR design only): the mapped
    // buffers, the bursts in flight, a first beat `latency` cycles after its address is
    // accepted and then a beat every `beat_interval` cycles; counters for sv_ddr_stats.
    std::vector<Region> regions;
    std::deque<Burst> bursts;
    uint64_t latency = 40;
    uint64_t beat_interval = 1;
    uint64_t next_beat_at = 0;
    bool ar_fire = false, r_fire = false, r_error = false;
    uint64_t ar_address = 0;
    uint32_t ar_beats = 0;
    uint64_t stats[5] = {0, 0, 0, 0, 0};  // requests, beats, error beats, first AR, last R
    // The write channels (a design whose stream is in DDR): bursts whose beats are still to
    // come, responses `latency` cycles after a burst's last beat, in order; the edge's
    // handshakes; counters for sv_ddr_write_stats.
    std::deque<WriteBurst> writes;
    std::deque<Response> responses;
    bool aw_fire = false, w_fire = false, b_fire = false;
    uint64_t aw_address = 0;
    uint32_t aw_beats = 0;
    std::vector<uint8_t> w_beat;
    uint64_t w_strobe = 0;  // the beat's wstrb: a bit a byte (a stem map's chunk, or all)
    uint64_t write_stats[3] = {0, 0, 0};  // bursts, beats, beats outside every buffer
};

#ifdef STEPVIT_DDR
constexpr unsigned DDR_BYTES = STEPVIT_DDR_WIDTH / 8;

// Copy one beat at `address` from the mapped buffers into `beat`; false if unmapped.
bool ddr_read(Harness* h, uint64_t address, uint8_t* beat) {
    for (const Region& region : h->regions) {
        if (address >= region.base && address + DDR_BYTES <= region.base + region.size) {
            std::memcpy(beat, region.data + (address - region.base), DDR_BYTES);
            return true;
        }
    }
    std::memset(beat, 0, DDR_BYTES);
    return false;
}

#ifdef STEPVIT_DDR_WRITES
void ddr_write_inputs(Harness* h);
void ddr_write_sample(Harness* h);
void ddr_write_after_edge(Harness* h, uint64_t edge);
#endif

// Drive the read channels for this cycle and settle, so that the design's outputs answer
// them; the handshakes seen now are the edge's, taken by ddr_after_edge.
void ddr_before_edge(Harness* h) {
    Vstepvit_accel* top = h->top.get();
    bool arready = h->bursts.size() < 8;
    const Burst* head = h->bursts.empty() ? nullptr : &h->bursts.front();
    bool rvalid = head != nullptr && h->cycle >= head->ready_at && h->cycle >= h->next_beat_at;
    uint8_t beat[DDR_BYTES];
    std::memset(beat, 0, DDR_BYTES);
    bool mapped = rvalid ? ddr_read(h, head->address, beat) : true;
    top->m_axi_arready = arready;
    top->m_axi_rvalid = rvalid;
#if STEPVIT_DDR_WIDTH > 64
    for (unsigned word = 0; word < DDR_BYTES / 4; ++word) {
        uint32_t value;
        std::memcpy(&value, beat + 4 * word, 4);
        top->m_axi_rdata[word] = value;
    }
#else
    uint64_t value = 0;
    std::memcpy(&value, beat, DDR_BYTES);
    top->m_axi_rdata = value;
#endif
    top->m_axi_rresp = mapped ? 0 : 2;  // SLVERR for a beat outside every mapped buffer
    top->m_axi_rlast = rvalid && head->beats == 1;
#ifdef STEPVIT_DDR_WRITES
    ddr_write_inputs(h);
#endif
    top->eval();
#ifdef STEPVIT_DDR_WRITES
    ddr_write_sample(h);
#endif
    h->ar_fire = arready && top->m_axi_arvalid;
    h->ar_address = top->m_axi_araddr;
    h->ar_beats = static_cast<uint32_t>(top->m_axi_arlen) + 1;
    h->r_fire = rvalid && top->m_axi_rready;
    h->r_error = !mapped;
}

#ifdef STEPVIT_DDR_WRITES
// Copy the bytes of one beat its `strobe` sets into the mapped buffers at `address`;
// false if unmapped.
bool ddr_write(Harness* h, uint64_t address, const uint8_t* beat, uint64_t strobe) {
    for (Region& region : h->regions) {
        if (address >= region.base && address + DDR_BYTES <= region.base + region.size) {
            uint8_t* to = region.data + (address - region.base);
            for (unsigned byte = 0; byte < DDR_BYTES; ++byte) {
                if (strobe >> byte & 1) to[byte] = beat[byte];
            }
            return true;
        }
    }
    return false;
}

// Drive the write channels for this cycle (before ddr_before_edge settles the design):
// an address while fewer than 8 bursts wait for beats, a beat while one does (the data
// after its address), the head response once due.
void ddr_write_inputs(Harness* h) {
    Vstepvit_accel* top = h->top.get();
    top->m_axi_awready = h->writes.size() < 8;
    top->m_axi_wready = !h->writes.empty();
    bool bvalid = !h->responses.empty() && h->cycle >= h->responses.front().ready_at;
    top->m_axi_bvalid = bvalid;
    top->m_axi_bresp = bvalid ? h->responses.front().bresp : 0;
}

// Take the write handshakes the settled design shows (after ddr_before_edge's eval).
void ddr_write_sample(Harness* h) {
    Vstepvit_accel* top = h->top.get();
    h->aw_fire = top->m_axi_awready && top->m_axi_awvalid;
    h->aw_address = top->m_axi_awaddr;
    h->aw_beats = static_cast<uint32_t>(top->m_axi_awlen) + 1;
    h->w_fire = top->m_axi_wready && top->m_axi_wvalid;
    h->b_fire = top->m_axi_bvalid && top->m_axi_bready;
    h->w_strobe = static_cast<uint64_t>(top->m_axi_wstrb);
    h->w_beat.assign(DDR_BYTES, 0);
#if STEPVIT_DDR_WIDTH > 64
    for (unsigned word = 0; word < DDR_BYTES / 4; ++word) {
        uint32_t value = top->m_axi_wdata[word];
        std::memcpy(h->w_beat.data() + 4 * word, &value, 4);
    }
#else
    uint64_t value = top->m_axi_wdata;
    std::memcpy(h->w_beat.data(), &value, DDR_BYTES);
#endif
}

// The edge's write handshakes: a response taken, a burst opened, a beat written (the
// burst's last queues its response).
void ddr_write_after_edge(Harness* h, uint64_t edge) {
    if (h->b_fire) h->responses.pop_front();
    if (h->aw_fire) {
        h->writes.push_back(WriteBurst{h->aw_address, h->aw_beats, false});
        h->write_stats[0]++;
    }
    if (h->w_fire) {
        WriteBurst& head = h->writes.front();
        if (!ddr_write(h, head.address, h->w_beat.data(), h->w_strobe)) {
            head.error = true;
            h->write_stats[2]++;
        }
        h->write_stats[1]++;
        head.address += DDR_BYTES;
        if (--head.beats == 0) {
            h->responses.push_back(Response{edge + h->latency,
                                            static_cast<uint8_t>(head.error ? 2 : 0)});
            h->writes.pop_front();
        }
    }
}
#endif

// Take the edge's handshakes: a new burst, or one beat of the burst at the head.
void ddr_after_edge(Harness* h) {
    uint64_t edge = h->cycle - 1;
    if (h->ar_fire) {
        h->bursts.push_back(Burst{h->ar_address, h->ar_beats, edge + h->latency});
        if (h->stats[0]++ == 0) h->stats[3] = edge;
    }
    if (h->r_fire) {
        Burst& head = h->bursts.front();
        head.address += DDR_BYTES;
        h->next_beat_at = edge + h->beat_interval;
        h->stats[1]++;
        if (h->r_error) h->stats[2]++;
        h->stats[4] = edge;
        if (--head.beats == 0) h->bursts.pop_front();
    }
#ifdef STEPVIT_DDR_WRITES
    ddr_write_after_edge(h, edge);
#endif
}
#endif

// One clock cycle with the inputs already set: settle, then a rising and a falling edge.
inline void tick(Harness* h) {
    Vstepvit_accel* top = h->top.get();
#ifdef STEPVIT_DDR
    ddr_before_edge(h);
#endif
    top->aclk = 1;
    h->context->timeInc(5);
    top->eval();
#if VM_TRACE_FST
    if (h->trace) h->trace->dump(h->context->time());
#endif
    top->aclk = 0;
    h->context->timeInc(5);
    top->eval();
#if VM_TRACE_FST
    if (h->trace) h->trace->dump(h->context->time());
#endif
    ++h->cycle;
#ifdef STEPVIT_DDR
    ddr_after_edge(h);
#endif
}

void idle_inputs(Vstepvit_accel* top) {
    top->s_axis_tvalid = 0;
    top->s_axis_tlast = 0;
    top->s_axis_tdata = 0;
    top->m_axis_tready = 0;
    top->s_axil_awvalid = 0;
    top->s_axil_wvalid = 0;
    top->s_axil_bready = 0;
    top->s_axil_arvalid = 0;
    top->s_axil_rready = 0;
}

}  // namespace

extern "C" {

// A new model with its own context; trace_path (may be null) names an FST file to write.
void* sv_open(const char* trace_path) {
    auto* h = new Harness;
    h->context = std::make_unique<VerilatedContext>();
    h->context->debug(0);
    h->context->randReset(0);
    h->top = std::make_unique<Vstepvit_accel>(h->context.get(), "stepvit_accel");
#if VM_TRACE_FST
    if (trace_path && trace_path[0]) {
        h->context->traceEverOn(true);
        h->trace = std::make_unique<VerilatedFstC>();
        h->top->trace(h->trace.get(), 99);
        h->trace->open(trace_path);
    }
#else
    (void)trace_path;
#endif
    idle_inputs(h->top.get());
    h->top->aclk = 0;
    h->top->aresetn = 1;
    h->top->eval();
    return h;
}

// 1 when the library was built with FST tracing.
int sv_can_trace(void) { return VM_TRACE_FST ? 1 : 0; }

void sv_close(void* handle) {
    auto* h = static_cast<Harness*>(handle);
    if (!h) return;
#if VM_TRACE_FST
    if (h->trace) h->trace->close();
#endif
    h->top->final();
    delete h;
}

uint64_t sv_cycle(void* handle) { return static_cast<Harness*>(handle)->cycle; }

// Hold aresetn low for `cycles` cycles, then one cycle out of reset.
void sv_reset(void* handle, int cycles) {
    auto* h = static_cast<Harness*>(handle);
    idle_inputs(h->top.get());
    h->top->aresetn = 0;
    for (int i = 0; i < cycles; ++i) tick(h);
    h->top->aresetn = 1;
    tick(h);
}

// Run `cycles` idle cycles (no stream or register traffic).
void sv_step(void* handle, uint64_t cycles) {
    auto* h = static_cast<Harness*>(handle);
    idle_inputs(h->top.get());
    for (uint64_t i = 0; i < cycles; ++i) tick(h);
}

// One AXI4-Lite write; returns BRESP, or -1 when no response came within max_cycles.
int sv_axil_write(void* handle, uint32_t address, uint32_t data, uint64_t max_cycles) {
    auto* h = static_cast<Harness*>(handle);
    Vstepvit_accel* top = h->top.get();
    idle_inputs(top);
    bool address_done = false, data_done = false;
    top->s_axil_awaddr = address;
    top->s_axil_wdata = data;
    top->s_axil_wstrb = 0xF;
    for (uint64_t i = 0; i < max_cycles; ++i) {
        top->s_axil_awvalid = !address_done;
        top->s_axil_wvalid = !data_done;
        top->s_axil_bready = 1;
        top->eval();
        bool address_fire = top->s_axil_awvalid && top->s_axil_awready;
        bool data_fire = top->s_axil_wvalid && top->s_axil_wready;
        bool response = top->s_axil_bvalid && address_done && data_done;
        int bresp = top->s_axil_bresp;
        tick(h);
        address_done |= address_fire;
        data_done |= data_fire;
        if (response) {
            idle_inputs(top);
            return bresp;
        }
    }
    idle_inputs(top);
    return -1;
}

// One AXI4-Lite read into *data; returns RRESP, or -1 when no data came within max_cycles.
int sv_axil_read(void* handle, uint32_t address, uint32_t* data, uint64_t max_cycles) {
    auto* h = static_cast<Harness*>(handle);
    Vstepvit_accel* top = h->top.get();
    idle_inputs(top);
    bool address_done = false;
    top->s_axil_araddr = address;
    for (uint64_t i = 0; i < max_cycles; ++i) {
        top->s_axil_arvalid = !address_done;
        top->s_axil_rready = 1;
        top->eval();
        bool address_fire = top->s_axil_arvalid && top->s_axil_arready;
        bool response = top->s_axil_rvalid && address_done;
        uint32_t rdata = top->s_axil_rdata;
        int rresp = top->s_axil_rresp;
        tick(h);
        address_done |= address_fire;
        if (response) {
            *data = rdata;
            idle_inputs(top);
            return rresp;
        }
    }
    idle_inputs(top);
    return -1;
}

// Stream up to n_in words (TLAST on the last when tlast_at_end) while collecting output
// words into out[0..out_capacity); stop when an output word with TLAST has been taken
// (stop_on_tlast), or every input word was taken and stop_on_tlast is 0, or after
// max_cycles. Returns the cycles run; *in_taken and *out_taken count the words moved,
// *out_last is 1 when the last word taken had TLAST. A building block for the emulated DMA.
uint64_t sv_stream(void* handle, const uint32_t* in, uint64_t n_in, int tlast_at_end,
                   uint32_t* out, uint64_t out_capacity, int stop_on_tlast,
                   uint64_t max_cycles, uint64_t* in_taken, uint64_t* out_taken,
                   int* out_last) {
    auto* h = static_cast<Harness*>(handle);
    Vstepvit_accel* top = h->top.get();
    idle_inputs(top);
    uint64_t sent = 0, received = 0, cycles = 0;
    int last = 0;
    while (cycles < max_cycles) {
        if (stop_on_tlast ? last : (sent == n_in)) break;
        top->s_axis_tvalid = sent < n_in;
        top->s_axis_tdata = sent < n_in ? in[sent] : 0;
        top->s_axis_tlast = tlast_at_end && sent + 1 == n_in;
        top->m_axis_tready = received < out_capacity && !last;
        top->eval();
        bool in_fire = top->s_axis_tvalid && top->s_axis_tready;
        bool out_fire = top->m_axis_tvalid && top->m_axis_tready;
        if (out_fire) {
            out[received++] = top->m_axis_tdata;
            last = top->m_axis_tlast;
        }
        if (in_fire) ++sent;
        tick(h);
        ++cycles;
    }
    idle_inputs(top);
    *in_taken = sent;
    *out_taken = received;
    *out_last = last;
    return cycles;
}

// The bulk path: stream n_frames frames of frame_words words back to back (TLAST on each
// last word) and collect one packet of packet_words words per frame into packets. For each
// frame, frame_start[i] is the cycle its first word was accepted and offered[i] the cycle
// the first word of its packet was offered (both on this model's cycle counter). A packet
// whose TLAST comes early or late ends the run. Returns the packets received (n_frames
// unless a packet took longer than timeout_cycles after the previous one, or was malformed;
// *status then says which: 0 done, 1 timeout, 2 packet with a wrong length).
int sv_run_frames(void* handle, const uint32_t* frames, int n_frames, int frame_words,
                  uint32_t* packets, int packet_words, uint64_t* frame_start,
                  uint64_t* offered, uint64_t timeout_cycles, int* status) {
    auto* h = static_cast<Harness*>(handle);
    Vstepvit_accel* top = h->top.get();
    idle_inputs(top);
    const uint64_t total_in = static_cast<uint64_t>(n_frames) * frame_words;
    uint64_t sent = 0;
    int done = 0, word = 0, started = 0;
    bool packet_open = false;
    uint64_t since_progress = 0;
    *status = 0;
    top->m_axis_tready = 1;
    while (done < n_frames) {
        const bool in_valid = sent < total_in;
        top->s_axis_tvalid = in_valid;
        top->s_axis_tdata = in_valid ? frames[sent] : 0;
        top->s_axis_tlast = in_valid && (sent % frame_words) == static_cast<uint64_t>(frame_words - 1);
        top->eval();
        if (top->s_axis_tvalid && top->s_axis_tready) {
            if (sent % frame_words == 0 && started < n_frames) frame_start[started++] = h->cycle;
            ++sent;
        }
        if (top->m_axis_tvalid) {
            if (!packet_open) {
                packet_open = true;
                offered[done] = h->cycle;
                word = 0;
            }
            const bool last = top->m_axis_tlast;
            if (word < packet_words) packets[static_cast<uint64_t>(done) * packet_words + word] = top->m_axis_tdata;
            ++word;
            if (last || word > packet_words) {
                packet_open = false;
                if (word != packet_words) {
                    tick(h);
                    *status = 2;
                    idle_inputs(top);
                    return done;
                }
                ++done;
                since_progress = 0;
            }
        }
        tick(h);
        if (++since_progress > timeout_cycles) {
            *status = 1;
            break;
        }
    }
    idle_inputs(top);
    return done;
}

// Whether this library drives m_axi_* (a weights-from-DDR design): 0 or the beat's bits.
int sv_ddr_width(void) {
#ifdef STEPVIT_DDR
    return STEPVIT_DDR_WIDTH;
#else
    return 0;
#endif
}

// Map `size` bytes at `data` (host memory the caller keeps alive) at physical `base`.
void sv_ddr_map(void* handle, uint64_t base, void* data, uint64_t size) {
    static_cast<Harness*>(handle)->regions.push_back(
        Region{base, static_cast<uint8_t*>(data), size});
}

// The memory's timing: the first beat of a burst `latency` cycles after its address, then
// a beat every `beat_interval` cycles.
void sv_ddr_timing(void* handle, uint64_t latency, uint64_t beat_interval) {
    auto* h = static_cast<Harness*>(handle);
    h->latency = latency;
    h->beat_interval = beat_interval < 1 ? 1 : beat_interval;
}

// Counters: read requests, beats, beats answered SLVERR, first request's cycle, last
// beat's cycle.
void sv_ddr_stats(void* handle, uint64_t* out) {
    std::memcpy(out, static_cast<Harness*>(handle)->stats, sizeof(uint64_t) * 5);
}

// Whether the library serves m_axi_*'s write channels (a design whose stream is in DDR).
int sv_ddr_writes(void) {
#ifdef STEPVIT_DDR_WRITES
    return 1;
#else
    return 0;
#endif
}

// Write counters: bursts, beats, beats outside every mapped buffer (answered SLVERR).
void sv_ddr_write_stats(void* handle, uint64_t* out) {
    std::memcpy(out, static_cast<Harness*>(handle)->write_stats, sizeof(uint64_t) * 3);
}

}  // extern "C"
