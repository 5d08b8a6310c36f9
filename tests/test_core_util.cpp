// Core utilities: seeded generators reproduce their streams, device specs resolve or fail with a
// message saying what is available, logging levels are validated, CRC-32C gives the standard check
// value on both of its paths.
#include "core/Crc32c.h"
#include "core/Device.h"
#include "core/Logging.h"
#include "core/Random.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>
#include <vector>

using namespace latentcell::core;

TEST(Random, GeneratorsReproduceTheirStreams) {
  auto a = makeGenerator(42);
  auto b = makeGenerator(42);
  auto c = makeGenerator(43);
  auto xa = torch::randn({100}, a);
  EXPECT_TRUE(torch::equal(xa, torch::randn({100}, b)));
  EXPECT_FALSE(torch::equal(xa, torch::randn({100}, c)));
  seedEverything(7);
  auto g1 = torch::rand({10});
  seedEverything(7);
  EXPECT_TRUE(torch::equal(g1, torch::rand({10})));
}

TEST(Device, ResolvesCpuAndAutoAndRejectsBadSpecs) {
  EXPECT_EQ(resolveDevice("cpu"), c10::Device(c10::kCPU));
  const auto automatic = resolveDevice("auto");
  EXPECT_EQ(automatic.is_cuda(), torch::cuda::is_available());
  try {
    resolveDevice("tpu");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("use auto, cpu, cuda or cuda:N"), std::string::npos) << e.what();
  }
  if (!torch::cuda::is_available()) {
    try {
      resolveDevice("cuda:0");
      FAIL() << "expected an error";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("no CUDA device is available"), std::string::npos) << e.what();
    }
  } else {
    EXPECT_THROW(resolveDevice("cuda:999"), std::invalid_argument);
  }
}

TEST(Logging, RejectsUnknownLevelsAndFiltersBelowTheLevel) {
  EXPECT_THROW(setupLogging("loud"), std::invalid_argument);
  setupLogging("warn");
  EXPECT_FALSE(logEnabled(LogLevel::Info));
  EXPECT_TRUE(logEnabled(LogLevel::Warn));
  setupLogging("info");
  EXPECT_TRUE(logEnabled(LogLevel::Info));
}

TEST(Crc32c, KnownAnswerAndBothPathsAgree) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the CRC-32C check value
  EXPECT_EQ(crc32cPortable("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  // Every length and alignment around the 8-byte steps, and continuation across a split.
  std::mt19937 rng(3);
  std::vector<uint8_t> bytes(300);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  for (size_t offset = 0; offset < 9; ++offset)
    for (size_t n = 0; n + offset <= bytes.size(); n += 7) {
      const uint32_t whole = crc32c(bytes.data() + offset, n);
      EXPECT_EQ(whole, crc32cPortable(bytes.data() + offset, n)) << offset << " " << n;
      const size_t half = n / 3;
      EXPECT_EQ(whole, crc32c(bytes.data() + offset + half, n - half, crc32c(bytes.data() + offset, half)));
    }
}
