// Subcommands of the latentcell binary. Each add*Command registers its CLI11 subcommand with its
// options on `parent` and returns the function that runs it once parsed; Main.cpp runs the one the
// user chose. A command returns its exit code and reports errors by throwing (see Main.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace latentcell::cli {

// The process's full command line (argv), for commands that relaunch the binary (set by main).
std::vector<std::string>& commandLine();

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command addInfoCommand(CLI::App& parent);
Command addTrainCommand(CLI::App& parent);
Command addDataCommand(CLI::App& parent);
Command addSimulateCommand(CLI::App& parent);
Command addEvaluateCommand(CLI::App& parent);
Command addEncodeCommand(CLI::App& parent);
Command addReconstructCommand(CLI::App& parent);
Command addBaselineCommand(CLI::App& parent);
Command addGenerateCommand(CLI::App& parent);
Command addRunCommand(CLI::App& parent);
Command addConfigCommand(CLI::App& parent);
Command addReportCommand(CLI::App& parent);
Command addExportCommand(CLI::App& parent);

}  // namespace latentcell::cli
