// latentcell: one binary, one subcommand per task. The mains stay thin: each subcommand parses
// its arguments and calls into the libraries. Errors end in one line on stderr and a non-zero
// exit: 2 for bad configs or arguments, 1 for failures while running.
#include "core/BuildInfo.h"
#include "core/Config.h"
#include "core/Logging.h"
#include "train/SmokeTask.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

namespace {

int runTrain(const std::string& config_path, const std::vector<std::string>& overrides) {
  latentcell::train::SmokeConfig config;
  latentcell::core::loadConfigFile(config, config_path, overrides);
  const auto result = latentcell::train::runSmokeTask(config);
  if (result.losses.size() >= 2) {
    latentcell::core::logInfo("loss {:.5f} -> {:.5f}", result.losses.front(), result.losses.back());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"latentcell: latent generative models of single cells on LibTorch"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")->capture_default_str();

  auto* info = app.add_subcommand("info", "Show versions, devices, distributed backends and threads");

  auto* train = app.add_subcommand("train", "Train a model from a YAML config (key.sub=value overrides follow)");
  std::string config_path;
  std::vector<std::string> overrides;
  train->add_option("config", config_path, "YAML config file")->required();
  train->add_option("overrides", overrides, "config overrides, e.g. optim.lr=1e-3 model.dim=64");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    latentcell::core::setupLogging(log_level);
    if (*info) {
      std::cout << latentcell::core::formatBuildInfo(latentcell::core::buildInfo());
      return 0;
    }
    if (*train) return runTrain(config_path, overrides);
  } catch (const latentcell::core::ConfigError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
