// latentcell: one binary, one subcommand per task. The main stays thin: it registers the
// subcommands (train/Commands.h), parses, and runs the chosen one. Errors end in one line on stderr
// and a non-zero exit: 2 for bad configs, arguments or inputs, 1 for failures while running.
#include "core/Config.h"
#include "core/Logging.h"
#include "train/Commands.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <vector>

namespace latentcell::cli {
std::vector<std::string>& commandLine() {
  static std::vector<std::string> args;
  return args;
}
}  // namespace latentcell::cli

int main(int argc, char** argv) {
  // OpenMP worker threads that wait actively spin on their core after every parallel region. The
  // models here run many small ops, so on a shared or oversubscribed machine the spinning threads
  // starve the ones doing work (measured: `generate` 193 s active vs 27 s passive at load 5 on two
  // cores). libgomp reads OMP_WAIT_POLICY once, when it loads, before main: so the binary
  // re-executes itself once with the passive policy unless the user chose a policy.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: then run with the default policy
  }
  latentcell::cli::commandLine().assign(argv, argv + argc);
  CLI::App app{"latentcell: latent generative models of single cells on LibTorch"};
  app.require_subcommand(1);
  app.fallthrough();  // global options such as --log-level may also follow the subcommand
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")->capture_default_str();

  using namespace latentcell::cli;
  const std::vector<Command> commands = {addInfoCommand(app),     addTrainCommand(app),
                                         addSimulateCommand(app), addDataCommand(app),
                                         addEvaluateCommand(app), addEncodeCommand(app),
                                         addReconstructCommand(app), addBaselineCommand(app),
                                         addGenerateCommand(app),
                                         addRunCommand(app),
                                         addConfigCommand(app),
                                         addReportCommand(app),
                                         addExportCommand(app)};

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    latentcell::core::setupLogging(log_level);
    for (const auto& cmd : commands) {
      if (cmd.app->parsed()) return cmd.run();
    }
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
