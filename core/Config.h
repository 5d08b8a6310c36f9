// Typed configuration: plain structs with defaults, filled from YAML files plus `a.b.c=value`
// command line overrides (marian-nmt / Hydra style), dumped back as the run's resolved YAML and
// described as a Markdown reference for the docs.
//
// A config struct declares its fields once, in visit(); loading, dumping, documenting and
// validating are visitors over that one declaration, so the four can never disagree about which
// keys exist. Loading is strict because a typo in a config must not silently train with a
// default: unknown keys, wrong types (1.5 for an integer, "yes" for a bool), missing files and
// malformed overrides all throw ConfigError with a one-line message naming the dotted key, where
// the value came from (file:line or the command line override) and how to fix it.
//
// yaml-cpp stays out of this header so that every translation unit holding a config struct does
// not pay for it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace latentcell::core {

// Every config problem, always with a one-line message (it is printed as-is by the CLI).
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ConfigSection;

// One method per supported field type. Keys are plain names (letters, digits, '_' and '-'),
// unique within their section; the dotted path is built by the visitors.
class ConfigVisitor {
 public:
  virtual ~ConfigVisitor();
  virtual void field(const char* key, int64_t& v, const char* help) = 0;
  virtual void field(const char* key, double& v, const char* help) = 0;
  virtual void field(const char* key, bool& v, const char* help) = 0;
  virtual void field(const char* key, std::string& v, const char* help) = 0;
  virtual void field(const char* key, std::vector<int64_t>& v, const char* help) = 0;
  virtual void field(const char* key, std::vector<double>& v, const char* help) = 0;
  virtual void field(const char* key, std::vector<std::string>& v, const char* help) = 0;
  // A string restricted to `choices`. A visitor method rather than a validate() check so that the
  // loader can list the allowed values at the offending line and the docs can show them. The
  // default treats it as a plain string, for visitors that do not care.
  virtual void choice(const char* key, std::string& v, std::initializer_list<const char*> choices,
                      const char* help);
  // A nested section; implementations recurse with s.visit().
  virtual void section(const char* key, ConfigSection& s, const char* help) = 0;
};

// Base of every config struct. Example:
//   struct OptimConfig : ConfigSection {
//     double lr = 1e-3;
//     int64_t steps = 100;
//     void visit(ConfigVisitor& v) override {
//       v.field("lr", lr, "learning rate");
//       v.field("steps", steps, "number of optimizer steps");
//     }
//     void validate() const override {
//       if (steps <= 0) reject("steps", "must be positive, got " + std::to_string(steps));
//     }
//   };
// and a parent declares it with v.section("optim", optim, "optimizer settings").
struct ConfigSection {
  virtual ~ConfigSection();
  // Must not change any value: it is also called on const configs (dump, describe, validate).
  virtual void visit(ConfigVisitor& v) = 0;
  // Range and cross-field checks, run after loading, children before parents.
  virtual void validate() const {}

 protected:
  // For validate(): reports `key` of this section as invalid. The loader turns it into a message
  // with the full dotted key and where the value came from, which the section itself cannot know.
  [[noreturn]] static void reject(const char* key, const std::string& reason);
};

// Reads the YAML file at `path`, then applies `overrides` in order (later ones win), then
// validates. Keys absent from both keep the struct's defaults. On error `root` may be partially
// updated; callers are expected to abort, not to retry with the same struct.
void loadConfigFile(ConfigSection& root, const std::string& path,
                    const std::vector<std::string>& overrides = {});

// Like loadConfigFile for YAML held in memory (e.g. a resolved config stored in a checkpoint);
// `sourceName` stands in for the file name in error messages.
void loadConfigText(ConfigSection& root, const std::string& yaml, const std::string& sourceName,
                    const std::vector<std::string>& overrides = {});

// The top-level string `key` of the YAML file at `path` after `overrides` (empty when absent), read
// before the config struct is chosen: `latentcell train` picks the task's struct from `task`.
std::string peekConfigString(const std::string& path, const std::string& key,
                             const std::vector<std::string>& overrides = {});

// Applies `key.sub=value` overrides (value: a YAML scalar or flow collection such as [1, 2] or
// {lr: 0.1}) to a config that has no file, then validates.
void applyOverrides(ConfigSection& root, const std::vector<std::string>& overrides);

// Runs validate() on every section, children first; errors name the dotted key.
void validateConfig(const ConfigSection& root);

// The resolved config as YAML, help texts as comments. Loading it back reproduces every value
// exactly: doubles use the shortest text that round-trips, strings are always double-quoted.
std::string dumpConfig(const ConfigSection& root);

// A Markdown table (key | type | default | description) with one row per field and section;
// "default" is the value currently in `root`, so pass a default-constructed config for docs.
std::string describeConfig(const ConfigSection& root);

}  // namespace latentcell::core
