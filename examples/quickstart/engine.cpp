// The engine on any payload type: 10,000 strings, one op, results in task order.
//
//   Batch<std::string> ──submit──► [scheduler] ──chunks──► [CPU workers] ──► BatchFuture
#include <tandem/tandem.hpp>
#include <cassert>
#include <string>
int main() {
    tandem::Engine engine{tandem::EngineConfig{.cpu_workers = 4}};
    tandem::Op<std::string, std::size_t> length{"length", [](const std::string& s) { return s.size(); }};
    tandem::Batch<std::string> batch;
    for (std::uint64_t i = 0; i < 10000; ++i) batch.push({i, std::string(i % 100, 'x'), 1});
    tandem::BatchResult<std::size_t> r = engine.submit(length, std::move(batch)).get();
    assert(r.results.size() == 10000);
    for (std::uint64_t i = 0; i < 10000; ++i) {
        assert(r.results[i].id == i);
        assert(r.results[i].output == i % 100);
    }
    assert(r.stats.device == tandem::DeviceKind::Cpu);
}
