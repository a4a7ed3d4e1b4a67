// Board harness: a design with a byte stream in (rx) and out (tx) served on a loopback
// TCP socket, as if it were a board on a serial line (sim/board.py starts it).
//
//   board_main [--port PORT] [--cycles-per-byte N] [--reset CYCLES]
//
// The top (compiled with --prefix Vtop) has the ports clk, rst (synchronous, high),
// rx__payload[7:0] / rx__valid / rx__ready (bytes from the host into the design),
// tx__payload[7:0] / tx__valid / tx__ready (bytes out) and busy (1 while the design has
// work in flight). Verilator spells "__" in C++ names "___05F": rx__payload is the
// member rx___05Fpayload.
//
// It listens on 127.0.0.1:PORT (0: any free port), prints "listening on 127.0.0.1:PORT"
// (flushed) and serves one client at a time. Received bytes enter rx one per cycle while
// the design is ready; tx bytes go to the socket. The model is clocked freely while there
// is work (bytes to move either way, tx offered, or busy) and the harness sleeps in poll()
// when there is none, so an idle board costs no CPU. When a client disconnects the
// design keeps its state and the next client is accepted; bytes it had sent still enter
// the design, and what the design sends while no client is connected is dropped, as on a
// serial line with nothing at the other end.
//
// --cycles-per-byte N paces both directions like a UART: at most one byte per N cycles
// (e.g. 333 at 100 MHz is 3 Mbaud). It stops on SIGINT or SIGTERM and when its parent
// process exits, and then prints one line "stopped: cycles C busy_seconds S rx_bytes R
// tx_bytes T" (the cycles clocked, the wall time spent clocking them, bytes in and out).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "Vtop.h"
#include "harness.h"
#include "verilated.h"

namespace {

constexpr int IDLE_POLL_MS = 50;          // an idle board wakes this often to look around
constexpr uint64_t BATCH_CYCLES = 4096;   // cycles between two looks at the socket
constexpr size_t RX_LIMIT = 1 << 16;      // received bytes buffered ahead of the design
constexpr size_t TX_LIMIT = 1 << 16;      // design bytes buffered for a slow reader

volatile std::sig_atomic_t stop_requested = 0;

void on_signal(int) { stop_requested = 1; }

[[noreturn]] void fail(const std::string& message) {
    std::cerr << "board_main: " << message << (errno ? std::string(": ") + std::strerror(errno)
                                                     : std::string()) << std::endl;
    std::exit(2);
}

uint64_t number(const std::string& option, const char* text) {
    char* end = nullptr;
    errno = 0;
    unsigned long long n = std::strtoull(text, &end, 10);
    if (errno || *end || !*text) {
        errno = 0;
        fail("bad number for " + option + ": " + text);
    }
    return n;
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Bytes waiting in one direction: a vector with a read position (compacted when drained).
struct Queue {
    std::vector<uint8_t> bytes;
    size_t pos = 0;
    size_t size() const { return bytes.size() - pos; }
    bool empty() const { return pos == bytes.size(); }
    void consumed(size_t n) {
        pos += n;
        if (pos == bytes.size()) bytes.clear(), pos = 0;
    }
    void clear() { bytes.clear(), pos = 0; }
};

}  // namespace

int main(int argc, char** argv) {
    uint64_t port = 0, cycles_per_byte = 0, reset = 4;
    for (int i = 1; i < argc; i += 2) {
        std::string a = argv[i];
        if (i + 1 >= argc) fail("option " + a + " needs a value");
        if (a == "--port") port = number(a, argv[i + 1]);
        else if (a == "--cycles-per-byte") cycles_per_byte = number(a, argv[i + 1]);
        else if (a == "--reset") reset = number(a, argv[i + 1]);
        else fail("unknown option " + a + " (usage: board_main [--port PORT] "
                  "[--cycles-per-byte N] [--reset CYCLES])");
    }
    if (port > 65535 || reset < 1) fail("--port must be 0..65535 and --reset >= 1");

    // Stop cleanly on a signal; the parent's death arrives as SIGTERM too (and the loop
    // also compares getppid() with the parent, in case the request came too late).
    struct sigaction sa {};
    sa.sa_handler = on_signal;   // no SA_RESTART: poll() returns EINTR at once
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-send is an EPIPE, not a death
    const pid_t parent = harness::die_with_parent(SIGTERM);

    const int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) fail("socket");
    const int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        fail("cannot listen on 127.0.0.1:" + std::to_string(port));
    if (listen(listener, 4) < 0) fail("listen");
    socklen_t len = sizeof addr;
    getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
    set_nonblocking(listener);

    auto context = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vtop>(context.get(), "top");
    auto low = [&]() { top->clk = 0; top->eval(); };
    auto high = [&]() { top->clk = 1; top->eval(); };
    top->rst = 1;
    top->rx___05Fvalid = 0;
    top->tx___05Fready = 0;
    for (uint64_t r = 0; r < reset; ++r) low(), high();
    top->rst = 0;
    low();

    std::cout << "listening on 127.0.0.1:" << ntohs(addr.sin_port) << std::endl;  // flushed

    int client = -1;
    Queue rx, tx;                      // rx: socket -> design, tx: design -> socket
    uint64_t cycle = 0, rx_next = 0, tx_next = 0, rx_bytes = 0, tx_bytes = 0;
    double busy_seconds = 0;
    auto drop_client = [&]() {
        close(client);
        client = -1;
        tx.clear();                    // nobody to deliver them to
    };

    while (!stop_requested && getppid() == parent) {
        // The socket side: accept, read what fits, write what is pending (never blocking).
        if (client < 0) {
            client = accept(listener, nullptr, nullptr);
            if (client >= 0) {
                set_nonblocking(client);
                setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            }
        }
        if (client >= 0 && rx.size() < RX_LIMIT) {
            uint8_t buf[1 << 16];
            ssize_t n = recv(client, buf, std::min(sizeof buf, RX_LIMIT - rx.size()), 0);
            if (n > 0) rx.bytes.insert(rx.bytes.end(), buf, buf + n);
            else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                drop_client();         // the client closed (or broke) the connection
        }
        if (client >= 0 && !tx.empty()) {
            ssize_t n = send(client, tx.bytes.data() + tx.pos, tx.size(), MSG_NOSIGNAL);
            if (n > 0) tx.consumed(static_cast<size_t>(n));
            else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                drop_client();
        }

        // The design side: clock while there is work and room for what it sends.
        const bool tx_room = tx.size() < TX_LIMIT;
        const bool work = !rx.empty() || top->busy || top->tx___05Fvalid;
        if (work && tx_room) {
            const double t0 = harness::wall_seconds();
            for (uint64_t k = 0; k < BATCH_CYCLES; ++k, ++cycle) {
                const bool rx_valid = !rx.empty() && cycle >= rx_next;
                if (rx_valid) top->rx___05Fpayload = rx.bytes[rx.pos];
                top->rx___05Fvalid = rx_valid;
                top->tx___05Fready = tx.size() < TX_LIMIT && cycle >= tx_next;
                low();
                const bool rx_fire = rx_valid && top->rx___05Fready;
                const bool tx_fire = top->tx___05Fvalid && top->tx___05Fready;
                const uint8_t byte = top->tx___05Fpayload;
                high();
                if (rx_fire) {
                    rx.consumed(1);
                    ++rx_bytes;
                    rx_next = cycle + cycles_per_byte;
                }
                if (tx_fire) {
                    if (client >= 0) tx.bytes.push_back(byte);
                    ++tx_bytes;
                    tx_next = cycle + cycles_per_byte;
                }
                if (rx.empty() && !top->busy && !top->tx___05Fvalid) {
                    ++cycle;
                    break;             // idle: back to the socket at once
                }
            }
            busy_seconds += harness::wall_seconds() - t0;
            continue;
        }

        // Nothing to clock: sleep until the socket has something, a signal, or a timeout.
        pollfd fds[1];
        fds[0].fd = client >= 0 ? client : listener;
        fds[0].events = static_cast<short>(
            (client < 0 || rx.size() < RX_LIMIT ? POLLIN : 0) | (tx.empty() ? 0 : POLLOUT));
        poll(fds, 1, IDLE_POLL_MS);
    }

    if (client >= 0) close(client);
    close(listener);
    top->final();
    std::cout << "stopped: cycles " << cycle << " busy_seconds " << busy_seconds
              << " rx_bytes " << rx_bytes << " tx_bytes " << tx_bytes << std::endl;
    return 0;
}
