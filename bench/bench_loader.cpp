// Loader throughput: shuffled minibatches through data::Loader from a shard directory or an h5ad
// file, timed after a warm-up, printed as one JSON line. bench/bench_loader.py drives it next to the
// Python anndata (backed) + torch DataLoader baseline, so all sides run in one go on the same file.
//
//   bench_loader --shards DIR | --h5ad FILE [--batch-size 256] [--batches 2000] [--seconds 30]
//                [--workers 1] [--block-size 64] [--format csr|dense|tokens] [--seed 0] [--verify]
//
// The checksum printed (entries plus first and last values of every batch) ties the output to the data.
#include "data/Loader.h"
#include "data/ShardDataset.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <iostream>

using namespace latentcell::data;

int main(int argc, char** argv) {
  CLI::App app{"latentcell loader benchmark"};
  std::string shards, h5ad, format = "csr";
  LoaderOptions o;
  o.workers = 1;
  o.block_size = 64;
  int64_t batches = 2000, warmup = 20;
  double seconds = 30;
  bool verify = false;
  app.add_option("--shards", shards, "shard directory");
  app.add_option("--h5ad", h5ad, "h5ad file");
  app.add_option("--batch-size", o.batch_size)->capture_default_str();
  app.add_option("--batches", batches, "batches timed at most")->capture_default_str();
  app.add_option("--warmup", warmup, "batches read before timing")->capture_default_str();
  app.add_option("--seconds", seconds, "time limit of the timed part")->capture_default_str();
  app.add_option("--workers", o.workers, "prefetch threads")->capture_default_str();
  app.add_option("--prefetch", o.prefetch, "batches prepared ahead")->capture_default_str();
  app.add_option("--block-size", o.block_size, "block shuffling block (0: plain permutation)")->capture_default_str();
  app.add_option("--format", format, "csr, dense or tokens")->capture_default_str();
  app.add_option("--context", o.tokens.context_length, "tokens: context length");
  app.add_option("--seed", o.seed)->capture_default_str();
  app.add_flag("--verify", verify, "verify shard checksums at open (timed separately)");
  CLI11_PARSE(app, argc, argv);
  if (shards.empty() == h5ad.empty()) {
    std::cerr << "error: give exactly one of --shards and --h5ad\n";
    return 2;
  }
  try {
    o.format = parseBatchFormat(format);
    if (o.format == BatchFormat::Tokens) o.tokens.truncation = Truncation::TopK;
    using Clock = std::chrono::steady_clock;
    const auto t_open = Clock::now();
    std::shared_ptr<CellSource> source;
    if (!shards.empty()) {
      ShardOpenOptions open;
      open.verify_checksums = verify;
      source = std::make_shared<ShardSource>(std::make_shared<const ShardDataset>(shards, open));
    } else {
      source = std::make_shared<H5adSource>(h5ad);
    }
    const double open_s = std::chrono::duration<double>(Clock::now() - t_open).count();
    Loader loader(source, o);
    int64_t epoch = 0;
    loader.start(epoch);
    // Epochs follow each other, as in training (the order of each is drawn at its start).
    const auto next = [&]() {
      auto b = loader.next();
      if (!b) {
        loader.start(++epoch);
        b = loader.next();
      }
      return b;
    };
    double checksum = 0;
    // The consumer only touches each batch (entry count, first and last value): the loader has
    // already written every value into the batch tensors, and anything heavier would time the
    // consumer (an ATen kernel here would time OpenMP on a shared machine).
    const auto consume = [&](const Batch& b) {
      const at::Tensor& t = o.format == BatchFormat::Csr     ? b.csr.values
                            : o.format == BatchFormat::Dense ? b.dense
                                                             : b.tokens.counts;
      const float* p = t.data_ptr<float>();
      checksum += static_cast<double>(t.numel()) + (t.numel() > 0 ? p[0] + p[t.numel() - 1] : 0.0f);
    };
    for (int64_t i = 0; i < warmup; ++i)
      if (auto b = next()) consume(*b);
    int64_t cells = 0, timed = 0;
    const auto t0 = Clock::now();
    double elapsed = 0;
    while (timed < batches && elapsed < seconds) {
      auto b = next();
      if (!b) break;  // an empty source
      consume(*b);
      cells += b->size();
      ++timed;
      elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    }
    std::cout << fmt::format(
        "{{\"source\": \"{}\", \"format\": \"{}\", \"batch_size\": {}, \"workers\": {}, \"block_size\": {}, "
        "\"batches\": {}, \"cells\": {}, \"seconds\": {:.4f}, \"cells_per_s\": {:.1f}, \"open_seconds\": {:.3f}, "
        "\"verified\": {}, \"checksum\": {:.1f}}}\n",
        shards.empty() ? "h5ad" : "shards", format, o.batch_size, o.workers, o.block_size, timed, cells, elapsed,
        elapsed > 0 ? static_cast<double>(cells) / elapsed : 0.0, open_s, verify ? "true" : "false", checksum);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
