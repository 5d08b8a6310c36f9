// Core utilities: seeded generators reproduce their streams, device specs resolve or fail with a
// message saying what is available, logging levels are validated.
#include "core/Device.h"
#include "core/Logging.h"
#include "core/Random.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

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
