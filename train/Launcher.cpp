// The local launcher (see Launcher.h).
//
// fork + execve rather than posix_spawn because each child must set PR_SET_PDEATHSIG before it
// runs. The parent is multi-threaded (the store server), so between fork and exec the child only
// makes async-signal-safe calls: everything it needs (path, argv, envp) is built beforehand.
#include "train/Launcher.h"

#include "core/Logging.h"

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string_view>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace latentcell::train {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kGrace = std::chrono::seconds(5);   // SIGTERM to SIGKILL
constexpr auto kDrain = std::chrono::seconds(1);   // output still arriving after the last exit
constexpr const char* kLaunchedVar = "LATENTCELL_LOCAL_LAUNCH";

std::string resolveProgram(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string candidate = (end > start ? dirs.substr(start, end - start) : ".") + "/" + program;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  throw std::runtime_error(fmt::format("cannot launch '{}': not found in PATH", program));
}

void writeAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // our own stdout is gone; nothing better to do with the output
    done += static_cast<size_t>(n);
  }
}

// One forwarded stream of one child: complete lines go out with the rank prefix.
struct Stream {
  int fd = -1;
  int target = 1;
  std::string pending;
};

struct Child {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
  int status = 0;
  Stream out, err;
};

void forward(Stream& s, int rank, bool flush) {
  std::string lines;
  size_t start = 0;
  for (size_t nl; (nl = s.pending.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines += fmt::format("[rank {}] {}\n", rank, std::string_view(s.pending).substr(start, nl - start));
  }
  s.pending.erase(0, start);
  if (flush && !s.pending.empty()) {
    lines += fmt::format("[rank {}] {}\n", rank, s.pending);
    s.pending.clear();
  }
  if (!lines.empty()) writeAll(s.target, lines);
}

// Reads what is there; closes the stream at end of file.
void drain(Stream& s, int rank) {
  char buffer[65536];
  const ssize_t n = read(s.fd, buffer, sizeof(buffer));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    close(s.fd);
    s.fd = -1;
    forward(s, rank, /*flush=*/true);
    return;
  }
  s.pending.append(buffer, static_cast<size_t>(n));
  forward(s, rank, /*flush=*/false);
}

std::vector<std::string> childEnvironment(int rank, int nproc, int port) {
  const std::vector<std::pair<std::string, std::string>> set = {
      {"RANK", std::to_string(rank)},
      {"LOCAL_RANK", std::to_string(rank)},
      {"WORLD_SIZE", std::to_string(nproc)},
      {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
      {"GROUP_RANK", "0"},
      {"MASTER_ADDR", "127.0.0.1"},
      {"MASTER_PORT", std::to_string(port)},
      {"TORCHELASTIC_USE_AGENT_STORE", "True"},
      {"TORCHELASTIC_RESTART_COUNT", "0"},
      {kLaunchedVar, "1"},
  };
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& [k, v] : set) replaced = replaced || k == name;
    if (!replaced) env.push_back(entry);
  }
  for (const auto& [k, v] : set) env.push_back(k + "=" + v);
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Starts one child with stdout and stderr on fresh pipes; throws if it cannot exec.
void spawn(Child& child, const std::string& path, std::vector<std::string> argv, std::vector<std::string> env) {
  int out[2], err[2], report[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 || pipe2(report, O_CLOEXEC) != 0) {
    throw std::runtime_error(fmt::format("cannot create pipes for rank {}: {}", child.rank, std::strerror(errno)));
  }
  auto argv_ptrs = pointers(argv);
  auto env_ptrs = pointers(env);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(fmt::format("cannot fork rank {}: {}", child.rank, std::strerror(errno)));
  if (pid == 0) {
    // Async-signal-safe calls only until execve.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    execve(path.c_str(), argv_ptrs.data(), env_ptrs.data());
    const int code = errno;
    [[maybe_unused]] const ssize_t n = write(report[1], &code, sizeof(code));
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  close(report[1]);
  int exec_errno = 0;
  const ssize_t got = read(report[0], &exec_errno, sizeof(exec_errno));  // EOF once execve succeeded
  close(report[0]);
  child.pid = pid;
  child.running = true;
  child.out = {out[0], STDOUT_FILENO, {}};
  child.err = {err[0], STDERR_FILENO, {}};
  if (got == static_cast<ssize_t>(sizeof(exec_errno))) {
    throw std::runtime_error(fmt::format("cannot launch '{}': {}", path, std::strerror(exec_errno)));
  }
}

std::string describeStatus(int status) {
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return fmt::format("exited with code {}", WEXITSTATUS(status));
}

bool failed(int status) { return WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0); }

}  // namespace

std::string currentExecutable() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

int runProcess(const std::vector<std::string>& argv) {
  if (argv.empty()) throw std::runtime_error("runProcess: empty command line");
  const std::string path = resolveProgram(argv.front());
  std::vector<std::string> args = argv;
  auto argv_ptrs = pointers(args);
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) throw std::runtime_error(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(fmt::format("cannot fork for '{}': {}", path, std::strerror(errno)));
  if (pid == 0) {
    // Async-signal-safe calls only until execve.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    execve(path.c_str(), argv_ptrs.data(), environ);
    const int code = errno;
    [[maybe_unused]] const ssize_t n = write(report[1], &code, sizeof(code));
    _exit(127);
  }
  close(report[1]);
  int exec_errno = 0;
  const ssize_t got = read(report[0], &exec_errno, sizeof(exec_errno));  // EOF once execve succeeded
  close(report[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (got == static_cast<ssize_t>(sizeof(exec_errno))) {
    throw std::runtime_error(fmt::format("cannot launch '{}': {}", path, std::strerror(exec_errno)));
  }
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

int launchLocal(int nproc, const std::vector<std::string>& argv) {
  if (nproc < 1) throw std::runtime_error(fmt::format("--nproc-per-node must be at least 1, got {}", nproc));
  if (argv.empty()) throw std::runtime_error("launchLocal: empty command line");
  if (std::getenv(kLaunchedVar) != nullptr) {
    throw std::runtime_error(
        "nested launch: this process is itself a rank of a local launch; drop --nproc-per-node from the ranks' "
        "command line");
  }
  const std::string path = resolveProgram(argv.front());
  c10d::TCPStoreOptions opts;
  opts.port = 0;  // the kernel picks a free one
  opts.isServer = true;
  opts.waitWorkers = false;
  c10d::TCPStore store("127.0.0.1", opts);

  std::vector<Child> children(nproc);
  try {
    for (int r = 0; r < nproc; ++r) {
      children[r].rank = r;
      spawn(children[r], path, argv, childEnvironment(r, nproc, store.getPort()));
    }
  } catch (...) {
    for (auto& c : children) {
      if (c.pid > 0) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, nullptr, 0);
      }
      for (int fd : {c.out.fd, c.err.fd}) {
        if (fd >= 0) close(fd);
      }
    }
    throw;
  }

  std::optional<size_t> failure;  // index of the first child that failed
  std::optional<Clock::time_point> kill_at, all_exited_at;
  bool killed = false;
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<Stream*> streams;
    for (auto& c : children) {
      for (Stream* s : {&c.out, &c.err}) {
        if (s->fd < 0) continue;
        fds.push_back({s->fd, POLLIN, 0});
        streams.push_back(s);
      }
    }
    int running = 0;
    for (const auto& c : children) running += c.running ? 1 : 0;
    // Output may still be buffered in the pipes after the last exit; a grandchild that kept a
    // pipe open must not keep the launcher waiting, though.
    if (running == 0 && (fds.empty() || Clock::now() > *all_exited_at + kDrain)) break;
    if (!fds.empty() && poll(fds.data(), fds.size(), 100) > 0) {
      for (size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        for (auto& c : children) {
          if (&c.out == streams[i] || &c.err == streams[i]) drain(*streams[i], c.rank);
        }
      }
    } else if (fds.empty()) {
      usleep(100 * 1000);
    }
    for (size_t i = 0; i < children.size(); ++i) {
      auto& c = children[i];
      if (!c.running || waitpid(c.pid, &c.status, WNOHANG) != c.pid) continue;
      c.running = false;
      if (failed(c.status) && !failure) {
        failure = i;
        kill_at = Clock::now() + kGrace;
        for (auto& other : children) {
          if (other.running) kill(other.pid, SIGTERM);
        }
      }
    }
    if (kill_at && !killed && Clock::now() > *kill_at) {
      for (auto& c : children) {
        if (c.running) kill(c.pid, SIGKILL);
      }
      killed = true;
    }
    bool any_running = false;
    for (const auto& c : children) any_running = any_running || c.running;
    if (!any_running && !all_exited_at) all_exited_at = Clock::now();
  }
  for (auto& c : children) {
    for (Stream* s : {&c.out, &c.err}) {
      if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
        forward(*s, c.rank, /*flush=*/true);
      }
    }
  }
  if (!failure) return 0;
  const auto& bad = children[*failure];
  core::log(core::LogLevel::Error, "rank {} (pid {}) {}{}", bad.rank, bad.pid, describeStatus(bad.status),
            nproc > 1 ? "; stopped the other ranks" : "");
  return WIFSIGNALED(bad.status) ? 128 + WTERMSIG(bad.status) : WEXITSTATUS(bad.status);
}

}  // namespace latentcell::train
