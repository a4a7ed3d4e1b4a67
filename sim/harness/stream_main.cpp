// Stream harness: beats in on one valid/ready stream, beats out of another, seeded random
// stalls on both sides, a cycle stamp for every transfer, all in C++ (sim/fast.py).
//
// It does what the cocotb bench sim/stream_tb.py does, with the same cycle numbering and
// stall semantics, at Verilator's own speed: the model is clocked here, two eval() calls
// per cycle, and the bookkeeping in between is a few comparisons.
//
//   stream_main --in IN.hex --out OUT.json --n-out N [--seed S] [--stall-in P]
//               [--stall-out P] [--timeout CYCLES] [--linger CYCLES] [--reset CYCLES]
//               [--in-width BITS] [--pauses FILE] [--progress FILE] [--waves FILE]
//
// Stalls as in stream_tb.py: before each input beat the source idles one more cycle with
// probability --stall-in, again and again; before each output beat the sink draws a count
// the same way with --stall-out and, when it is not 0, holds the beat that many beat
// times once the design offers it. The counts come from the harness's own seeded
// generator, or from --pauses FILE: two lines of counts, one per input beat and one per
// output beat (missing ones are 0), e.g. drawn in Python the way stream_tb.py draws them.
//
// IN.hex holds one input beat per line in hex. OUT.json gets the result in the format of
// stream_tb.py: status ("ok", "timeout", "stream_rule"), out, out_cycles, in_cycles,
// extra, cycles, sim_seconds, sim_cpu_seconds, idle_in_cycles, held_out_beats,
// held_out_cycles, rule_error. Exit status 0 when the result was written (whatever its
// status), 2 on a usage or input error (message on stderr).
//
// Cycle numbers count rising edges after reset: `--reset` edges with rst high, then
// edge 0 is the first at which a transfer can happen. A beat "at cycle c" crossed on
// edge c (valid and ready both high just before it).
//
// The stream names come from the build (default i_stream / o_stream, see below); the top
// is always compiled with --prefix Vtop.

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "Vtop.h"
#include "harness.h"
#include "verilated.h"
#if VM_TRACE_FST
#include "verilated_fst_c.h"
using Trace = VerilatedFstC;
#elif VM_TRACE
#include "verilated_vcd_c.h"
using Trace = VerilatedVcdC;
#endif

// Verilator spells "__" in a C++ name "___05F": port i_stream__payload is the member
// i_stream___05Fpayload. BNNHW_I_PORT / BNNHW_O_PORT are the stream names so spelled
// with that separator (i_stream___05F), BNNHW_I_NAME / BNNHW_O_NAME as in the design.
#ifndef BNNHW_I_PORT
#define BNNHW_I_PORT i_stream___05F
#define BNNHW_I_NAME i_stream
#endif
#ifndef BNNHW_O_PORT
#define BNNHW_O_PORT o_stream___05F
#define BNNHW_O_NAME o_stream
#endif
#define BNNHW_CAT_(a, b) a##b
#define BNNHW_CAT(a, b) BNNHW_CAT_(a, b)
#define BNNHW_STR_(a) #a
#define BNNHW_STR(a) BNNHW_STR_(a)
#define I_PAYLOAD BNNHW_CAT(BNNHW_I_PORT, payload)
#define I_VALID BNNHW_CAT(BNNHW_I_PORT, valid)
#define I_READY BNNHW_CAT(BNNHW_I_PORT, ready)
#define O_PAYLOAD BNNHW_CAT(BNNHW_O_PORT, payload)
#define O_VALID BNNHW_CAT(BNNHW_O_PORT, valid)
#define O_READY BNNHW_CAT(BNNHW_O_PORT, ready)

using harness::Words;

namespace {

constexpr double PROGRESS_EVERY_S = 0.5;
constexpr uint64_t HALF_PERIOD_PS = 5000;  // traces: a 10 ns clock, like stream_tb.py

struct Options {
    std::string in_file, out_file, progress_file, waves_file, pauses_file;
    uint64_t n_out = 0, seed = 0, timeout = 1000000, linger = 0, reset = 4;
    double stall_in = 0, stall_out = 0;
    unsigned in_width = 0;  // 0: as wide as the port's C++ type
};

[[noreturn]] void fail(const std::string& message) {
    std::cerr << "stream_main: " << message << std::endl;
    std::exit(2);
}

Options parse_args(int argc, char** argv) {
    Options o;
    bool have_n_out = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 >= argc) fail("option " + a + " needs a value");
        std::string v = argv[++i];
        char* end = nullptr;
        auto number = [&]() {
            errno = 0;
            unsigned long long n = std::strtoull(v.c_str(), &end, 10);
            if (errno || *end || v.empty()) fail("bad number for " + a + ": " + v);
            return static_cast<uint64_t>(n);
        };
        auto probability = [&]() {
            double p = std::strtod(v.c_str(), &end);
            if (*end || v.empty() || !(p >= 0 && p < 1)) fail("bad probability for " + a);
            return p;
        };
        if (a == "--in") o.in_file = v;
        else if (a == "--out") o.out_file = v;
        else if (a == "--progress") o.progress_file = v;
        else if (a == "--waves") o.waves_file = v;
        else if (a == "--pauses") o.pauses_file = v;
        else if (a == "--n-out") o.n_out = number(), have_n_out = true;
        else if (a == "--seed") o.seed = number();
        else if (a == "--timeout") o.timeout = number();
        else if (a == "--linger") o.linger = number();
        else if (a == "--reset") o.reset = number();
        else if (a == "--in-width") o.in_width = static_cast<unsigned>(number());
        else if (a == "--stall-in") o.stall_in = probability();
        else if (a == "--stall-out") o.stall_out = probability();
        else fail("unknown option " + a);
    }
    if (o.in_file.empty() || o.out_file.empty() || !have_n_out)
        fail("usage: stream_main --in IN.hex --out OUT.json --n-out N [options]");
    if (o.timeout < 1 || o.reset < 1) fail("--timeout and --reset must be >= 1");
    return o;
}

// All input beats, `n` words each, back to back.
Words read_beats(const std::string& path, size_t n, unsigned bits, size_t* count) {
    std::ifstream f(path);
    if (!f) fail("cannot read " + path);
    Words beats;
    std::string line;
    *count = 0;
    for (size_t lineno = 1; std::getline(f, line); ++lineno) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (line.empty()) continue;
        beats.resize(beats.size() + n);
        if (!harness::parse_hex(line, n, bits, &beats[beats.size() - n]))
            fail("input beat " + std::to_string(*count) + " (line " + std::to_string(lineno) +
                 ") = 0x" + line + " is not hex or does not fit the " + std::to_string(bits) +
                 "-bit " BNNHW_STR(BNNHW_I_NAME) " payload");
        ++*count;
    }
    return beats;
}

// The pause counts of one side: drawn with probability p, or read from a list.
struct Pauses {
    harness::Rng rng;
    double p;
    std::vector<uint64_t> given;
    bool have_list = false;
    size_t next = 0;
    uint64_t draw() {
        if (!have_list) return rng.pause(p);
        return next < given.size() ? given[next++] : 0;
    }
};

// Read the two lines of --pauses into the sides' lists.
void read_pauses(const std::string& path, Pauses& in, Pauses& out) {
    std::ifstream f(path);
    if (!f) fail("cannot read " + path);
    Pauses* sides[2] = {&in, &out};
    for (Pauses* side : sides) {
        std::string line;
        std::getline(f, line);
        std::istringstream s(line);
        side->have_list = true;
        for (uint64_t n; s >> n;) side->given.push_back(n);
        if (!s.eof()) fail("bad pause count in " + path);
    }
}

void write_progress(const std::string& path, size_t beats, uint64_t cycle) {
    std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp);
        f << beats << ' ' << cycle << '\n';
    }
    std::rename(tmp.c_str(), path.c_str());
}

template <typename T>
std::string json_list(const std::vector<T>& xs) {
    std::ostringstream s;
    s << '[';
    for (size_t i = 0; i < xs.size(); ++i) s << (i ? ", " : "") << xs[i];
    s << ']';
    return s.str();
}

std::string hex_list(const Words& beats, size_t n) {
    std::string s = "[";
    for (size_t i = 0; i < beats.size(); i += n)
        s += (i ? ", \"" : "\"") + harness::to_hex(&beats[i], n) + "\"";
    return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
    // A harness whose parent (Python) died has no one to report to: stop with it.
    harness::die_with_parent(SIGKILL);
    Options opt = parse_args(argc, argv);

    auto context = std::make_unique<VerilatedContext>();
    context->traceEverOn(!opt.waves_file.empty());
    auto top = std::make_unique<Vtop>(context.get(), "top");

    const size_t in_n = harness::words_of(top->I_PAYLOAD);
    const size_t out_n = harness::words_of(top->O_PAYLOAD);
    const unsigned in_bits = opt.in_width ? opt.in_width : static_cast<unsigned>(32 * in_n);
    if (in_bits > 32 * in_n) fail("--in-width is wider than the input port");
    size_t n_in = 0;
    const Words in_beats = read_beats(opt.in_file, in_n, in_bits, &n_in);

#if VM_TRACE
    std::unique_ptr<Trace> trace;
    if (!opt.waves_file.empty()) {
        trace = std::make_unique<Trace>();
        top->trace(trace.get(), 99);
        trace->open(opt.waves_file.c_str());
    }
#else
    if (!opt.waves_file.empty()) fail("--waves needs a build with traces");
#endif
    uint64_t half_cycles = 0;  // trace time, in half clock periods
    auto eval = [&]() {
        top->eval();
#if VM_TRACE
        if (trace) trace->dump(half_cycles * HALF_PERIOD_PS);
#endif
    };
    // One rising edge: settle the inputs set for this cycle with the clock low, then raise it.
    auto low = [&]() { top->clk = 0; eval(); ++half_cycles; };
    auto high = [&]() { top->clk = 1; eval(); ++half_cycles; };

    top->rst = 1;
    top->I_VALID = 0;
    top->O_READY = 0;
    for (uint64_t r = 0; r < opt.reset; ++r) low(), high();
    top->rst = 0;

    Pauses src_pauses{harness::Rng(opt.seed), opt.stall_in, {}};
    Pauses sink_pauses{harness::Rng(opt.seed + 1), opt.stall_out, {}};
    if (!opt.pauses_file.empty()) read_pauses(opt.pauses_file, src_pauses, sink_pauses);

    // Source: beat `next_in` is offered once `in_idle` idle cycles have passed.
    size_t next_in = 0;
    uint64_t in_idle = 0, idle_in_cycles = 0;
    auto draw_in = [&]() {
        if (next_in < n_in) {
            in_idle = src_pauses.draw();
            idle_in_cycles += in_idle;
        }
    };

    // Sink. FREE: ready high, waiting for a beat. WAIT: ready low until the design offers
    // the next beat, which will then be held. HOLD: ready low while the offered beat waits
    // until edge `take_at`; the stream rule is checked every cycle. LINGER: ready high
    // after the last expected beat until edge `linger_end`, recording anything more.
    enum class Sink { FREE, WAIT, HOLD, LINGER, DONE };
    Sink sink = Sink::FREE;
    uint64_t hold_n = 0, hold_since = 0, take_at = 0, linger_end = 0;
    uint64_t held_out_beats = 0, held_out_cycles = 0;
    Words out, extra, held(out_n), seen(out_n);
    std::vector<uint64_t> out_cycles, in_cycles;
    size_t n_got = 0;
    auto draw_out = [&]() {
        if (n_got == opt.n_out) {
            sink = opt.linger ? Sink::LINGER : Sink::DONE;
            return;
        }
        hold_n = sink_pauses.draw();
        sink = hold_n ? Sink::WAIT : Sink::FREE;
    };

    std::string status = "ok", rule_error;
    uint64_t cycles = 0;
    const double wall0 = harness::wall_seconds(), cpu0 = harness::cpu_seconds();
    double next_report = wall0;

    draw_in();
    draw_out();
    if (sink == Sink::LINGER) linger_end = opt.linger - 1;  // n_out == 0: linger from edge 0
    bool offered = false;  // the current input beat is on the payload port
    for (uint64_t c = 0; sink != Sink::DONE; ++c) {
        if (c >= opt.timeout && sink != Sink::LINGER) {
            status = "timeout";
            cycles = opt.timeout;
            break;
        }
        // Inputs for this cycle.
        const bool in_valid = next_in < n_in && in_idle == 0;
        if (in_valid && !offered) {
            harness::put(top->I_PAYLOAD, &in_beats[next_in * in_n]);
            offered = true;
        }
        top->I_VALID = in_valid;
        top->O_READY = sink == Sink::FREE || sink == Sink::LINGER;
        low();

        // What the sink sees before the edge.
        bool take = false;
        if (sink == Sink::FREE || sink == Sink::LINGER) {
            take = top->O_VALID;
            if (take) harness::get(top->O_PAYLOAD, held.data());
        } else if (sink == Sink::WAIT && top->O_VALID) {
            // Hold for hold_n beat times: the cycles per output beat so far, holds left
            // out, at least one (stream_tb.hold_unit).
            uint64_t unit = (c + 1 - held_out_cycles) / (n_got + 1);
            unit = unit ? unit : 1;
            harness::get(top->O_PAYLOAD, held.data());
            hold_since = c;
            take_at = c + hold_n * unit;
            sink = Sink::HOLD;
        } else if (sink == Sink::HOLD) {
            // The held beat must stay offered, unchanged (checked before raising ready).
            const bool valid = top->O_VALID;
            if (!valid || !harness::same(top->O_PAYLOAD, held.data())) {
                harness::get(top->O_PAYLOAD, seen.data());
                const std::string was = "0x" + harness::to_hex(held.data(), out_n);
                const std::string now = "0x" + harness::to_hex(seen.data(), out_n);
                rule_error = std::string("stream rule broken on " BNNHW_STR(BNNHW_O_NAME) ": ") +
                    (valid ? "payload changed from " + was + " to " + now + " at cycle " +
                                 std::to_string(c) + " while the beat offered since cycle " +
                                 std::to_string(hold_since) + " waited"
                           : "valid dropped at cycle " + std::to_string(c) +
                                 " before the beat offered since cycle " +
                                 std::to_string(hold_since) + " was taken (payload " + was +
                                 ", now " + now + " with valid low)");
                status = "stream_rule";
                cycles = c;
                break;
            }
            if (c == take_at) {
                top->O_READY = 1;
                top->eval();  // ready may feed the input ready (not traced: same time)
                take = true;
                ++held_out_beats;
                held_out_cycles += take_at - hold_since;
            }
        }
        const bool in_fire = in_valid && top->I_READY;

        high();  // edge c

        if (in_fire) {
            in_cycles.push_back(c);
            ++next_in;
            offered = false;
            draw_in();
        } else if (!in_valid && in_idle) {
            --in_idle;
        }
        if (take) {
            if (sink == Sink::LINGER) {
                extra.insert(extra.end(), held.begin(), held.end());
            } else {
                out.insert(out.end(), held.begin(), held.end());
                out_cycles.push_back(c);
                ++n_got;
                draw_out();
                if (sink == Sink::LINGER) linger_end = c + opt.linger;
            }
        }
        if (sink == Sink::LINGER && c == linger_end) sink = Sink::DONE;
        if (sink == Sink::DONE) cycles = c + 1;
        if (!opt.progress_file.empty() && (c & 0xFFFF) == 0 &&
            harness::wall_seconds() >= next_report) {
            write_progress(opt.progress_file, n_got, n_got ? out_cycles.back() : 0);
            next_report = harness::wall_seconds() + PROGRESS_EVERY_S;
        }
    }
    const double sim_seconds = harness::wall_seconds() - wall0;
    const double sim_cpu_seconds = harness::cpu_seconds() - cpu0;
    if (!opt.progress_file.empty())
        write_progress(opt.progress_file, n_got, n_got ? out_cycles.back() : 0);
#if VM_TRACE
    if (trace) trace->close();
#endif
    top->final();

    std::ofstream f(opt.out_file);
    f.precision(9);
    f << "{\"status\": \"" << status << "\", \"out\": " << hex_list(out, out_n)
      << ", \"out_cycles\": " << json_list(out_cycles)
      << ", \"in_cycles\": " << json_list(in_cycles)
      << ", \"extra\": " << hex_list(extra, out_n) << ", \"cycles\": " << cycles
      << ", \"sim_seconds\": " << sim_seconds << ", \"sim_cpu_seconds\": " << sim_cpu_seconds
      << ", \"idle_in_cycles\": " << idle_in_cycles
      << ", \"held_out_beats\": " << held_out_beats
      << ", \"held_out_cycles\": " << held_out_cycles << ", \"rule_error\": "
      << (rule_error.empty() ? "null" : harness::json_string(rule_error));
#ifdef BNNHW_READ_PORT
    // an output port read when the run ends (a design's counters): "ports": {name: hex}
    Words value(harness::words_of(top->BNNHW_READ_PORT));
    harness::get(top->BNNHW_READ_PORT, value.data());
    f << ", \"ports\": {\"" BNNHW_STR(BNNHW_READ_NAME) "\": \""
      << harness::to_hex(value.data(), value.size()) << "\"}";
#endif
    f << "}\n";
    f.close();
    if (!f) fail("cannot write " + opt.out_file);
    return 0;
}
