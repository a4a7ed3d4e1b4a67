// Shared helpers of bnnhw's C++ Verilator harnesses (stream_main.cpp, board_main.cpp).
//
// Verilator gives a port the smallest C++ type that holds it: CData (1-8 bits), SData
// (9-16), IData (17-32), QData (33-64) or VlWide<N> (N 32-bit words, LSB word first).
// The harnesses move payloads as vectors of 32-bit words, LSB first, and convert with the
// overloaded put/get/same helpers below, so one harness serves every payload width.
#pragma once

#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <type_traits>
#include <vector>

#include "verilated.h"

namespace harness {

using Words = std::vector<uint32_t>;

// --- ports of any width --------------------------------------------------------------

// 32-bit words of a port of type T.
template <typename T>
constexpr size_t words_of(const T&) {
    static_assert(std::is_integral_v<T>, "a Verilator port is an integer or a VlWide");
    return sizeof(T) <= 4 ? 1 : 2;
}
template <size_t N>
constexpr size_t words_of(const VlWide<N>&) { return N; }

// Port <- words (w holds at least words_of(port) words).
template <typename T>
inline void put(T& port, const uint32_t* w) {
    if constexpr (sizeof(T) <= 4) port = static_cast<T>(w[0]);
    else port = static_cast<T>(w[0]) | (static_cast<T>(w[1]) << 32);
}
template <size_t N>
inline void put(VlWide<N>& port, const uint32_t* w) {
    for (size_t i = 0; i < N; ++i) port[i] = w[i];
}

// Words <- port (w has room for words_of(port) words).
template <typename T>
inline void get(const T& port, uint32_t* w) {
    w[0] = static_cast<uint32_t>(port);
    if constexpr (sizeof(T) > 4) w[1] = static_cast<uint32_t>(static_cast<uint64_t>(port) >> 32);
}
template <size_t N>
inline void get(const VlWide<N>& port, uint32_t* w) {
    for (size_t i = 0; i < N; ++i) w[i] = port[i];
}

// Whether the port holds exactly the words w.
template <typename T>
inline bool same(const T& port, const uint32_t* w) {
    uint32_t now[2] = {0, 0};
    get(port, now);
    return now[0] == w[0] && (sizeof(T) <= 4 || now[1] == w[1]);
}
template <size_t N>
inline bool same(const VlWide<N>& port, const uint32_t* w) {
    for (size_t i = 0; i < N; ++i)
        if (port[i] != w[i]) return false;
    return true;
}

// --- hex text ------------------------------------------------------------------------

// Parse one hex number (no prefix) into n words, LSB first. False on a bad digit or
// when the number needs more than `bits` bits.
inline bool parse_hex(const std::string& text, size_t n, unsigned bits, uint32_t* w) {
    for (size_t i = 0; i < n; ++i) w[i] = 0;
    size_t k = 0;                                     // nibble index from the LSB
    for (size_t i = text.size(); i-- > 0; ++k) {
        char c = text[i];
        unsigned v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                   : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 16;
        if (v == 16) return false;
        if (v == 0) continue;                         // leading zeros may go past the port
        if (k / 8 >= n) return false;
        w[k / 8] |= v << (4 * (k % 8));
    }
    for (unsigned b = bits; b < 32 * n; ++b)          // bits beyond the payload must be 0
        if ((w[b / 32] >> (b % 32)) & 1) return false;
    return true;
}

// Words (LSB first) as lowercase hex without leading zeros ("0" for zero).
inline std::string to_hex(const uint32_t* w, size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string s;
    for (size_t i = n; i-- > 0;)
        for (int nib = 7; nib >= 0; --nib) {
            unsigned v = (w[i] >> (4 * nib)) & 15;
            if (v || !s.empty()) s.push_back(digits[v]);
        }
    return s.empty() ? "0" : s;
}

// --- seeded stalls -------------------------------------------------------------------

// A small, fully specified generator (splitmix64), so a seed gives the same stalls with
// any C++ library. The sequence is not Python's random.Random. The seed goes through the
// output mix first: splitmix64 steps its state by a constant, so states seed * constant
// would make the generators of seeds s and s + 1 (source and sink) one step apart.
struct Rng {
    uint64_t state;
    static uint64_t mix(uint64_t z) {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    explicit Rng(uint64_t seed) : state(mix(seed ^ 0x632BE59BD9B4E019ull)) {}
    uint64_t next() { return mix(state += 0x9E3779B97F4A7C15ull); }
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }   // [0, 1)
    // How many more idle cycles: one more with probability p, again and again (geometric).
    uint64_t pause(double p) {
        uint64_t n = 0;
        while (p > 0 && uniform() < p) ++n;
        return n;
    }
};

// --- process hygiene -----------------------------------------------------------------

// Ask the kernel to send `sig` when the parent dies, and cover the race where it died
// before the request (we were re-parented already). Returns the parent's pid for later
// getppid() checks.
inline pid_t die_with_parent(int sig) {
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, sig);
    if (getppid() != parent) raise(sig);
    return parent;
}

inline double wall_seconds() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

inline double cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// A JSON string literal (the harness only writes ASCII messages).
inline std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out.push_back('\\');
        if (static_cast<unsigned char>(c) < 0x20) out += ' ';
        else out.push_back(c);
    }
    return out + "\"";
}

}  // namespace harness
