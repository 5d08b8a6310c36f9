// Local multi-process launch, like `torchrun --standalone`: `latentcell train --nproc-per-node N`
// runs N copies of the binary as the ranks of one job on this machine.
//
// The launcher hosts the rendezvous store itself (127.0.0.1, a port the kernel picks, so no port
// race) and starts each child with RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT and TORCHELASTIC_USE_AGENT_STORE=True (rank 0 then connects instead of hosting, as
// under torchrun). Each child's stdout and stderr are forwarded line by line, prefixed with
// "[rank N] ". When a child fails, the others get SIGTERM, and SIGKILL 5 s later; children also get
// SIGTERM if the launcher dies.
#pragma once

#include <string>
#include <vector>

namespace latentcell::train {

// argv[0] is the program (looked up in PATH when it has no slash); argv must not repeat the
// option that asked for the launch. Returns 0 when every rank exits with 0; otherwise logs which
// rank failed and returns its exit code (128 + signal number when it was killed).
int launchLocal(int nproc, const std::vector<std::string>& argv);

// The running executable (/proc/self/exe), for a command that relaunches itself.
std::string currentExecutable();

// Runs argv (argv[0] as for launchLocal) to completion with this process's environment, stdin,
// stdout and stderr; the child gets SIGTERM if this process dies. Returns its exit code (128 +
// signal number when it was killed); throws if it cannot be started.
int runProcess(const std::vector<std::string>& argv);

}  // namespace latentcell::train
