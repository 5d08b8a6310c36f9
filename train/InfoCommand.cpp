// `latentcell info`: what the build sees (see core/BuildInfo.h).
#include "core/BuildInfo.h"
#include "train/Commands.h"

#include <iostream>

namespace latentcell::cli {

Command addInfoCommand(CLI::App& parent) {
  Command cmd;
  cmd.app = parent.add_subcommand("info", "Show versions, devices, distributed backends and threads");
  cmd.run = [] {
    std::cout << core::formatBuildInfo(core::buildInfo());
    return 0;
  };
  return cmd;
}

}  // namespace latentcell::cli
