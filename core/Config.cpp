// Config loading, overrides, dumping and docs (see Config.h).
//
// Everything is a visitor over ConfigSection::visit(). Loading walks the struct, not the YAML:
// each visitor holds the YAML mapping of one section, takes the entries the struct declares and
// afterwards reports whatever entry nobody took as an unknown key, with the known keys listed.
// An override `a.b.c=v` is turned into the mapping {a: {b: {c: v}}} and goes through the same
// code as a file, so both get identical type rules and messages; only the "where" differs
// ("in FILE:LINE" or "in command line override '...'").
//
// Scalars are parsed here rather than with yaml-cpp's as<T>(), which accepts 1.5 for an integer
// (truncating), "yes"/"on" for bools and quoted numbers; none of those should reach a run.
#include "core/Config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>
#include <utility>

namespace latentcell::core {

namespace {

// Thrown by ConfigSection::reject. It keeps the bare key and the reason apart so that the
// validator, which knows the section's path and where each value came from, can rebuild the
// message; when validate() is called directly the base message still names the key.
class RejectedField : public ConfigError {
 public:
  RejectedField(std::string key, std::string reason)
      : ConfigError("'" + key + "' " + reason), key(std::move(key)), reason(std::move(reason)) {}
  std::string key;
  std::string reason;
};

}  // namespace

ConfigVisitor::~ConfigVisitor() = default;

void ConfigVisitor::choice(const char* key, std::string& v, std::initializer_list<const char*>,
                           const char* help) {
  field(key, v, help);
}

ConfigSection::~ConfigSection() = default;

void ConfigSection::reject(const char* key, const std::string& reason) {
  throw RejectedField(key ? key : "", reason);
}

namespace {

// ---------------------------------------------------------------------------------------------
// Message helpers. Messages must stay on one line (the CLI prints them as-is and log scrapers
// read them line by line), so every echoed value is escaped and long values are cut.

std::string shown(const std::string& s, size_t maxLen = 80) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= maxLen) {
      out += "...";
      break;
    }
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string inQuotes(const std::string& s) { return "'" + shown(s) + "'"; }
std::string inQuotesPath(const std::string& s) { return "'" + shown(s, 4096) + "'"; }

[[noreturn]] void fail(std::string msg) {
  // Last line of defence; the pieces above are already escaped.
  std::replace(msg.begin(), msg.end(), '\n', ' ');
  std::replace(msg.begin(), msg.end(), '\r', ' ');
  throw ConfigError(msg);
}

std::string joinKey(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string joinList(const std::vector<std::string>& items, const char* sep = ", ") {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

size_t editDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The closest known key for a typo, or "" when nothing is plausibly meant.
std::string suggestKey(const std::string& unknown, const std::vector<std::string>& known) {
  std::string best;
  size_t bestDist = 3;  // at most two edits, and fewer than the key's own length
  for (const auto& k : known) {
    size_t d = editDistance(unknown, k);
    if (d < bestDist && d < std::max(k.size(), unknown.size())) {
      best = k;
      bestDist = d;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Field types: the name used in the docs and the phrase used in "must be ..." messages.

template <class T>
struct FieldType;
template <>
struct FieldType<int64_t> {
  static constexpr const char* name = "int";
  static constexpr const char* expected = "an integer";
};
template <>
struct FieldType<double> {
  static constexpr const char* name = "float";
  static constexpr const char* expected = "a number";
};
template <>
struct FieldType<bool> {
  static constexpr const char* name = "bool";
  static constexpr const char* expected = "true or false";
};
template <>
struct FieldType<std::string> {
  static constexpr const char* name = "string";
  static constexpr const char* expected = "a string";
};
template <>
struct FieldType<std::vector<int64_t>> {
  static constexpr const char* name = "list[int]";
  static constexpr const char* expected = "a list of integers like [1, 2]";
};
template <>
struct FieldType<std::vector<double>> {
  static constexpr const char* name = "list[float]";
  static constexpr const char* expected = "a list of numbers like [0.5, 1.0]";
};
template <>
struct FieldType<std::vector<std::string>> {
  static constexpr const char* name = "list[string]";
  static constexpr const char* expected = "a list of strings like [a, b]";
};

// ---------------------------------------------------------------------------------------------
// YAML text of values, shared by dumpConfig and describeConfig.

std::string formatValue(int64_t v) { return std::to_string(v); }

std::string formatValue(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  // Shortest text that parses back to the same bits (to_chars guarantees the round trip).
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, res.ptr);
  // Keeps 1.0 recognisable as a float to readers and to other YAML tools.
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string formatValue(bool v) { return v ? "true" : "false"; }

// Always double-quoted: a plain `true`, `1e3`, `null` or `a: b` would read back as another type.
std::string formatValue(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02X", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

template <class T>
std::string formatValue(const std::vector<T>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + formatValue(v[i]);
  return out + "]";
}

// Help texts end up in YAML comments and table cells, both single-line.
std::string oneLineHelp(const char* help) {
  std::string s = help ? help : "";
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s;
}

std::string choicesText(std::initializer_list<const char*> choices) {
  std::vector<std::string> items(choices.begin(), choices.end());
  return joinList(items);
}

// ---------------------------------------------------------------------------------------------
// Where a value came from: a file (with line) or one command line override.

struct Source {
  std::string name;
  bool isFile = true;

  std::string where(const YAML::Mark& mark) const {
    if (!isFile) return "in command line override " + inQuotes(name);
    std::string s = "in " + shown(name, 4096);
    if (!mark.is_null()) s += ":" + std::to_string(mark.line + 1);
    return s;
  }
};

using SourceMap = std::map<std::string, std::string>;  // dotted key -> where it was last set

// ---------------------------------------------------------------------------------------------
// Scalar conversion, strict on purpose (see the top of the file).

bool isQuoted(const YAML::Node& n) {
  // yaml-cpp tags plain scalars "?" and quoted ones "!"; explicit tags count as not plain.
  return n.Tag() != "?" && !n.Tag().empty();
}

std::string got(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "nothing (null)";
    case YAML::NodeType::Scalar:
      return isQuoted(n) ? "the quoted string " + inQuotes(n.Scalar()) : inQuotes(n.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "nothing";
  }
}

template <class T>
[[noreturn]] void wrongType(const YAML::Node& n, const std::string& key, const std::string& where,
                            const std::string& hint = "") {
  fail("'" + key + "' " + where + " must be " + FieldType<T>::expected + ", got " + got(n) + hint);
}

// Quoted "5" is a string in YAML; say so, since the user probably meant the number.
std::string quoteHint(const YAML::Node& n) {
  return n.IsScalar() && isQuoted(n) ? "; remove the quotes" : "";
}

// Accepts a leading '+', which from_chars does not.
std::string_view numberText(const std::string& s) {
  std::string_view t = s;
  if (t.size() > 1 && t[0] == '+' && t[1] != '-' && t[1] != '+') t.remove_prefix(1);
  return t;
}

void convert(const YAML::Node& n, int64_t& out, const std::string& key, const std::string& where) {
  if (!n.IsScalar() || isQuoted(n)) wrongType<int64_t>(n, key, where, quoteHint(n));
  std::string_view t = numberText(n.Scalar());
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec == std::errc::result_out_of_range) {
    fail("'" + key + "' " + where +
         " is out of range for a 64-bit integer: " + inQuotes(n.Scalar()));
  }
  if (t.empty() || ec != std::errc() || ptr != t.data() + t.size()) {
    wrongType<int64_t>(n, key, where);
  }
  out = v;
}

void convert(const YAML::Node& n, double& out, const std::string& key, const std::string& where) {
  if (!n.IsScalar() || isQuoted(n)) wrongType<double>(n, key, where, quoteHint(n));
  const std::string& s = n.Scalar();
  // YAML's spellings of the special values; from_chars handles inf/nan itself.
  static const std::map<std::string, double> special = {
      {".inf", HUGE_VAL},   {".Inf", HUGE_VAL},  {".INF", HUGE_VAL},   {"+.inf", HUGE_VAL},
      {"+.Inf", HUGE_VAL},  {"+.INF", HUGE_VAL}, {"-.inf", -HUGE_VAL}, {"-.Inf", -HUGE_VAL},
      {"-.INF", -HUGE_VAL}, {".nan", NAN},       {".NaN", NAN},        {".NAN", NAN}};
  if (auto it = special.find(s); it != special.end()) {
    out = it->second;
    return;
  }
  std::string_view t = numberText(s);
  double v = 0;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec == std::errc::result_out_of_range) {
    fail("'" + key + "' " + where + " is out of range for a double: " + inQuotes(s));
  }
  if (t.empty() || ec != std::errc() || ptr != t.data() + t.size()) {
    wrongType<double>(n, key, where);
  }
  out = v;
}

void convert(const YAML::Node& n, bool& out, const std::string& key, const std::string& where) {
  if (n.IsScalar() && !isQuoted(n)) {
    // YAML 1.2 core schema only: yes/no/on/off are YAML 1.1 and ambiguous to readers.
    const std::string& s = n.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") {
      out = true;
      return;
    }
    if (s == "false" || s == "False" || s == "FALSE") {
      out = false;
      return;
    }
  }
  wrongType<bool>(n, key, where, quoteHint(n));
}

void convert(const YAML::Node& n, std::string& out, const std::string& key,
             const std::string& where) {
  if (!n.IsScalar()) {
    wrongType<std::string>(n, key, where, n.IsNull() ? "; write \"\" for an empty string" : "");
  }
  out = n.Scalar();
}

template <class T>
void convertList(const YAML::Node& n, std::vector<T>& out, const std::string& key,
                 const Source& src, const YAML::Mark& mark) {
  if (!n.IsSequence()) {
    wrongType<std::vector<T>>(n, key, src.where(mark),
                              n.IsNull() ? "; write [] for an empty list" : "");
  }
  std::vector<T> values(n.size());
  for (size_t i = 0; i < n.size(); ++i) {
    const YAML::Node item = n[i];
    YAML::Mark itemMark = item.Mark().is_null() ? mark : item.Mark();
    convert(item, values[i], key + "[" + std::to_string(i) + "]", src.where(itemMark));
  }
  out = std::move(values);
}

template <class T>
void convertAny(const YAML::Node& n, T& out, const std::string& key, const Source& src,
                const YAML::Mark& mark) {
  convert(n, out, key, src.where(mark));
}
template <class T>
void convertAny(const YAML::Node& n, std::vector<T>& out, const std::string& key, const Source& src,
                const YAML::Mark& mark) {
  convertList(n, out, key, src, mark);
}

// ---------------------------------------------------------------------------------------------
// Visitors.

bool isKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

std::string sectionName(const std::string& path) {
  return path.empty() ? "the top level" : "'" + path + "'";
}

void checkChoice(const std::string& path, const std::string& value,
                 std::initializer_list<const char*> choices, const std::string& where) {
  bool allowed =
      std::any_of(choices.begin(), choices.end(), [&](const char* c) { return value == c; });
  if (!allowed) {
    fail("'" + path + "'" + (where.empty() ? "" : " " + where) +
         " must be one of: " + choicesText(choices) + "; got " + inQuotes(value));
  }
}

// Tracks the keys of one section. Declaration mistakes in visit() are caught by whichever
// visitor runs first; otherwise they would surface much later as a dump that cannot be loaded.
class PathVisitor : public ConfigVisitor {
 protected:
  explicit PathVisitor(std::string prefix) : prefix_(std::move(prefix)) {}

  std::string declare(const char* key) {
    std::string k = key ? key : "";
    if (k.empty() || k[0] == '-' || !std::all_of(k.begin(), k.end(), isKeyChar)) {
      fail("config declaration error: invalid key " + inQuotes(k) + " under " +
           sectionName(prefix_) +
           "; keys use letters, digits, '_' and '-' (not first) so they can be overridden as "
           "a.b=value");
    }
    if (std::find(keys_.begin(), keys_.end(), k) != keys_.end()) {
      fail("config declaration error: key '" + joinKey(prefix_, k) +
           "' is declared twice; rename one of them");
    }
    keys_.push_back(k);
    return joinKey(prefix_, k);
  }

  std::string prefix_;
  std::vector<std::string> keys_;
};

// Only declares; used to list a section's keys in error messages.
class KeyCollector final : public PathVisitor {
 public:
  explicit KeyCollector(std::string prefix) : PathVisitor(std::move(prefix)) {}
  const std::vector<std::string>& keys() const { return keys_; }

  void field(const char* key, int64_t&, const char*) override { declare(key); }
  void field(const char* key, double&, const char*) override { declare(key); }
  void field(const char* key, bool&, const char*) override { declare(key); }
  void field(const char* key, std::string&, const char*) override { declare(key); }
  void field(const char* key, std::vector<int64_t>&, const char*) override { declare(key); }
  void field(const char* key, std::vector<double>&, const char*) override { declare(key); }
  void field(const char* key, std::vector<std::string>&, const char*) override { declare(key); }
  void section(const char* key, ConfigSection&, const char*) override { declare(key); }
};

// Assigns one YAML mapping (or nothing, for sections absent from it) to one section.
class AssignVisitor final : public PathVisitor {
 public:
  AssignVisitor(std::string prefix, const YAML::Node* map, const Source& src, SourceMap& lastSet)
      : PathVisitor(std::move(prefix)), src_(src), lastSet_(lastSet) {
    if (!map || !map->IsMap()) return;
    for (auto it = map->begin(); it != map->end(); ++it) {
      // Copies: it->first refers into a proxy that dies with the expression.
      const YAML::Node k = it->first;
      if (!k.IsScalar()) {
        fail("keys " + src_.where(k.Mark()) + " under " + sectionName(prefix_) +
             " must be plain names, got " + got(k));
      }
      if (find(k.Scalar(), /*markUsed=*/false)) {
        fail("duplicate key '" + joinKey(prefix_, k.Scalar()) + "' " + src_.where(k.Mark()) +
             "; keep only one of them");
      }
      entries_.push_back({k.Scalar(), it->second, k.Mark()});
    }
  }

  void field(const char* key, int64_t& v, const char*) override { assign(key, v); }
  void field(const char* key, double& v, const char*) override { assign(key, v); }
  void field(const char* key, bool& v, const char*) override { assign(key, v); }
  void field(const char* key, std::string& v, const char*) override { assign(key, v); }
  void field(const char* key, std::vector<int64_t>& v, const char*) override { assign(key, v); }
  void field(const char* key, std::vector<double>& v, const char*) override { assign(key, v); }
  void field(const char* key, std::vector<std::string>& v, const char*) override { assign(key, v); }

  void choice(const char* key, std::string& v, std::initializer_list<const char*> choices,
              const char*) override {
    std::string path = declare(key);
    Entry* e = find(key);
    if (!e) return;
    std::string where = src_.where(e->mark);
    std::string value;
    convert(e->value, value, path, where);
    checkChoice(path, value, choices, where);
    v = value;
    lastSet_[path] = where;
  }

  void section(const char* key, ConfigSection& s, const char*) override {
    std::string path = declare(key);
    const YAML::Node* child = nullptr;
    if (Entry* e = find(key)) {
      if (e->value.IsMap()) {
        child = &e->value;
      } else if (!e->value.IsNull()) {  // `optim:` with everything commented out is fine
        KeyCollector keys(path);
        s.visit(keys);
        fail("'" + path + "' " + src_.where(e->mark) +
             " is a section and must be a mapping of its keys (" + joinList(keys.keys()) +
             "), got " + got(e->value) +
             (src_.isFile ? "" : "; set one key with " + path + ".KEY=VALUE"));
      }
    }
    AssignVisitor sub(path, child, src_, lastSet_);
    s.visit(sub);
    sub.checkUnknownKeys();
  }

  // Entries no field took. Called after visit() because only then are all keys known.
  void checkUnknownKeys() const {
    for (const Entry& e : entries_) {
      if (e.used) continue;
      std::string msg =
          "unknown key '" + joinKey(prefix_, shown(e.key)) + "' " + src_.where(e.mark);
      std::string suggestion = suggestKey(e.key, keys_);
      if (!suggestion.empty()) msg += " (did you mean '" + joinKey(prefix_, suggestion) + "'?)";
      if (keys_.empty()) {
        msg += "; " + sectionName(prefix_) + " has no keys";
      } else {
        msg +=
            prefix_.empty() ? "; known top-level keys: " : "; known keys under '" + prefix_ + "': ";
        msg += joinList(keys_);
      }
      fail(msg);
    }
  }

 private:
  struct Entry {
    std::string key;
    YAML::Node value;
    YAML::Mark mark;  // of the key: a null value's own mark points at the next line
    bool used = false;
  };

  Entry* find(const std::string& key, bool markUsed = true) {
    for (Entry& e : entries_) {
      if (e.key == key) {
        if (markUsed) e.used = true;
        return &e;
      }
    }
    return nullptr;
  }

  template <class T>
  void assign(const char* key, T& v) {
    std::string path = declare(key);
    Entry* e = find(key);
    if (!e) return;
    T value{};
    convertAny(e->value, value, path, src_, e->mark);
    v = std::move(value);
    lastSet_[path] = src_.where(e->mark);
  }

  const Source& src_;
  SourceMap& lastSet_;
  std::vector<Entry> entries_;
};

void validateSection(const ConfigSection& s, const std::string& path, const SourceMap* lastSet);

class ValidateVisitor final : public PathVisitor {
 public:
  ValidateVisitor(std::string prefix, const SourceMap* lastSet)
      : PathVisitor(std::move(prefix)), lastSet_(lastSet) {}

  void field(const char* key, int64_t&, const char*) override { declare(key); }
  void field(const char* key, double&, const char*) override { declare(key); }
  void field(const char* key, bool&, const char*) override { declare(key); }
  void field(const char* key, std::string&, const char*) override { declare(key); }
  void field(const char* key, std::vector<int64_t>&, const char*) override { declare(key); }
  void field(const char* key, std::vector<double>&, const char*) override { declare(key); }
  void field(const char* key, std::vector<std::string>&, const char*) override { declare(key); }
  // Loading already checked values it set; this catches defaults outside their own choices.
  void choice(const char* key, std::string& v, std::initializer_list<const char*> choices,
              const char*) override {
    std::string path = declare(key);
    std::string where;
    if (lastSet_) {
      auto it = lastSet_->find(path);
      where = it != lastSet_->end() ? it->second : "(default value)";
    }
    checkChoice(path, v, choices, where);
  }
  void section(const char* key, ConfigSection& s, const char*) override {
    validateSection(s, declare(key), lastSet_);
  }

 private:
  const SourceMap* lastSet_;
};

void validateSection(const ConfigSection& s, const std::string& path, const SourceMap* lastSet) {
  ValidateVisitor children(path, lastSet);
  // visit() is non-const only because loading shares it; this visitor writes nothing.
  const_cast<ConfigSection&>(s).visit(children);
  try {
    s.validate();
  } catch (const RejectedField& e) {
    std::string key = joinKey(path, e.key);
    std::string where;
    if (lastSet) {
      auto it = lastSet->find(key);
      where = " " + (it != lastSet->end() ? it->second : std::string("(default value)"));
    }
    fail("'" + key + "'" + where + " is invalid: " + e.reason);
  } catch (const std::exception& e) {
    fail((path.empty() ? std::string("config") : "section '" + path + "'") +
         " is invalid: " + e.what());
  }
}

class DumpVisitor final : public PathVisitor {
 public:
  DumpVisitor(std::string prefix, std::string& out, size_t indent)
      : PathVisitor(std::move(prefix)), out_(out), indent_(indent, ' ') {}

  void field(const char* key, int64_t& v, const char* help) override { emit(key, v, help); }
  void field(const char* key, double& v, const char* help) override { emit(key, v, help); }
  void field(const char* key, bool& v, const char* help) override { emit(key, v, help); }
  void field(const char* key, std::string& v, const char* help) override { emit(key, v, help); }
  void field(const char* key, std::vector<int64_t>& v, const char* help) override {
    emit(key, v, help);
  }
  void field(const char* key, std::vector<double>& v, const char* help) override {
    emit(key, v, help);
  }
  void field(const char* key, std::vector<std::string>& v, const char* help) override {
    emit(key, v, help);
  }
  void choice(const char* key, std::string& v, std::initializer_list<const char*> choices,
              const char* help) override {
    std::string h = oneLineHelp(help);
    emit(key, v, ((h.empty() ? "" : h + " ") + "(one of: " + choicesText(choices) + ")").c_str());
  }
  void section(const char* key, ConfigSection& s, const char* help) override {
    std::string path = declare(key);
    std::string body;
    DumpVisitor sub(path, body, indent_.size() + 2);
    s.visit(sub);
    if (body.empty()) {
      out_ += indent_ + key + ": {}" + comment(help) + "\n";
    } else {
      out_ += indent_ + key + ":" + comment(help) + "\n" + body;
    }
  }

 private:
  static std::string comment(const char* help) {
    std::string h = oneLineHelp(help);
    return h.empty() ? "" : "  # " + h;
  }

  template <class T>
  void emit(const char* key, const T& v, const char* help) {
    declare(key);
    out_ += indent_ + key + ": " + formatValue(v) + comment(help) + "\n";
  }

  std::string& out_;
  std::string indent_;
};

// Markdown table cell text: '|' would split the cell even inside a code span.
std::string cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string codeCell(const std::string& s) {
  return s.find('`') == std::string::npos ? "`" + cell(s) + "`" : cell(s);
}

class DescribeVisitor final : public PathVisitor {
 public:
  DescribeVisitor(std::string prefix, std::string& out)
      : PathVisitor(std::move(prefix)), out_(out) {}

  void field(const char* key, int64_t& v, const char* help) override { row(key, v, help); }
  void field(const char* key, double& v, const char* help) override { row(key, v, help); }
  void field(const char* key, bool& v, const char* help) override { row(key, v, help); }
  void field(const char* key, std::string& v, const char* help) override { row(key, v, help); }
  void field(const char* key, std::vector<int64_t>& v, const char* help) override {
    row(key, v, help);
  }
  void field(const char* key, std::vector<double>& v, const char* help) override {
    row(key, v, help);
  }
  void field(const char* key, std::vector<std::string>& v, const char* help) override {
    row(key, v, help);
  }
  void choice(const char* key, std::string& v, std::initializer_list<const char*> choices,
              const char* help) override {
    line(declare(key), "one of: " + choicesText(choices), codeCell(formatValue(v)), help);
  }
  void section(const char* key, ConfigSection& s, const char* help) override {
    std::string path = declare(key);
    line(path, "section", "", help);
    DescribeVisitor sub(path, out_);
    s.visit(sub);
  }

 private:
  template <class T>
  void row(const char* key, const T& v, const char* help) {
    line(declare(key), FieldType<T>::name, codeCell(formatValue(v)), help);
  }
  void line(const std::string& path, const std::string& type, const std::string& def,
            const char* help) {
    out_ += "| `" + cell(path) + "` | " + cell(type) + " | " + def + " | " +
            cell(oneLineHelp(help)) + " |\n";
  }

  std::string& out_;
};

// ---------------------------------------------------------------------------------------------
// Loading.

struct Override {
  std::string text;
  YAML::Node tree;  // {a: {b: {c: value}}}
};

Override parseOverride(const std::string& text) {
  std::string bad = "bad command line override " + inQuotes(text) + ": ";
  if (!text.empty() && text[0] == '-') {
    fail(bad + "write overrides as key.path=VALUE, without leading dashes");
  }
  size_t eq = text.find('=');
  if (eq == std::string::npos) {
    fail(bad + "missing '='; write it as " + shown(text) + "=VALUE");
  }
  std::string key = text.substr(0, eq);
  if (key.empty())
    fail(bad + "empty key before '='; write it as key.path=VALUE, e.g. optim.lr=0.01");
  std::vector<std::string> path;
  for (size_t start = 0;;) {
    size_t dot = key.find('.', start);
    path.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (path.back().empty()) {
      fail(bad + "empty path segment in key " + inQuotes(key) +
           "; separate keys with single dots, e.g. optim.lr=0.01");
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }

  std::string valueText = text.substr(eq + 1);
  YAML::Node node;
  if (valueText.empty()) {
    node = YAML::Node(std::string());  // `name=` is the empty string, as in Hydra
  } else {
    try {
      node = YAML::Load(valueText);
    } catch (const YAML::Exception& e) {
      fail(bad + "value " + inQuotes(valueText) + " is not valid YAML (" + shown(e.msg) +
           "); close brackets and quotes, or quote the whole value");
    }
  }
  // Node assignment writes through to the referenced node in yaml-cpp; reset() rebinds.
  for (size_t i = path.size(); i-- > 0;) {
    YAML::Node map(YAML::NodeType::Map);
    map[path[i]] = node;
    node.reset(map);
  }
  return {text, node};
}

std::vector<Override> parseOverrides(const std::vector<std::string>& overrides) {
  std::vector<Override> parsed;
  parsed.reserve(overrides.size());
  for (const auto& o : overrides) parsed.push_back(parseOverride(o));
  return parsed;
}

void assignTree(ConfigSection& root, const YAML::Node& tree, const Source& src,
                SourceMap& lastSet) {
  AssignVisitor v("", &tree, src, lastSet);
  root.visit(v);
  v.checkUnknownKeys();
}

void applyParsed(ConfigSection& root, const std::vector<Override>& overrides, SourceMap& lastSet) {
  for (const auto& o : overrides) {
    Source src{o.text, /*isFile=*/false};
    assignTree(root, o.tree, src, lastSet);
  }
}

void loadFromText(ConfigSection& root, const std::string& text, const std::string& name,
                  const std::vector<Override>& overrides) {
  YAML::Node tree;
  try {
    tree = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    fail("YAML syntax error in " + shown(name, 4096) + ":" + std::to_string(e.mark.line + 1) + ":" +
         std::to_string(e.mark.column + 1) + ": " + shown(e.msg) +
         "; check the indentation, the ':' after each key and that brackets and quotes close");
  } catch (const YAML::Exception& e) {
    fail("cannot parse " + inQuotesPath(name) + " as YAML: " + shown(e.msg));
  }
  if (!tree.IsMap() && !tree.IsNull()) {
    fail("config " + inQuotesPath(name) +
         " must be a mapping of keys at the top level (key: value " + "lines), got " + got(tree));
  }
  SourceMap lastSet;
  Source src{name, /*isFile=*/true};
  assignTree(root, tree, src, lastSet);
  applyParsed(root, overrides, lastSet);
  validateSection(root, "", &lastSet);
}

}  // namespace

void loadConfigText(ConfigSection& root, const std::string& yaml, const std::string& sourceName,
                    const std::vector<std::string>& overrides) {
  loadFromText(root, yaml, sourceName, parseOverrides(overrides));
}

void loadConfigFile(ConfigSection& root, const std::string& path,
                    const std::vector<std::string>& overrides) {
  namespace fs = std::filesystem;
  // Override syntax first: it is the cheaper mistake to report and needs no IO.
  std::vector<Override> parsed = parseOverrides(overrides);

  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) {
    std::string hint;
    if (fs::path(path).is_relative()) {
      fs::path cwd = fs::current_path(ec);
      if (!ec) hint = " (relative to the working directory " + inQuotesPath(cwd.string()) + ")";
    }
    fail("config file " + inQuotesPath(path) + " does not exist" + hint + "; check the path");
  }
  if (fs::is_directory(st)) {
    fail("config file " + inQuotesPath(path) + " is a directory; pass the path of a YAML file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    fail("cannot open config file " + inQuotesPath(path) + ": " + std::strerror(errno) +
         "; check its permissions");
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("cannot read config file " + inQuotesPath(path) + ": " + std::strerror(errno));
  loadFromText(root, text.str(), path, parsed);
}

std::string peekConfigString(const std::string& path, const std::string& key,
                             const std::vector<std::string>& overrides) {
  std::string value;
  for (const auto& o : parseOverrides(overrides)) {
    if (o.tree[key] && o.tree[key].IsScalar()) value = o.tree[key].as<std::string>();
  }
  if (!value.empty()) return value;
  YAML::Node tree;
  try {
    tree = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("config file " + inQuotesPath(path) + " cannot be opened; check the path");
  } catch (const YAML::Exception& e) {
    fail("cannot parse " + inQuotesPath(path) + " as YAML: " + shown(e.msg));
  }
  if (!tree.IsMap() || !tree[key]) return "";
  if (!tree[key].IsScalar()) fail("key " + inQuotes(key) + " in " + inQuotesPath(path) + " must be a string");
  return tree[key].as<std::string>();
}

void applyOverrides(ConfigSection& root, const std::vector<std::string>& overrides) {
  std::vector<Override> parsed = parseOverrides(overrides);
  SourceMap lastSet;
  applyParsed(root, parsed, lastSet);
  validateSection(root, "", &lastSet);
}

void validateConfig(const ConfigSection& root) { validateSection(root, "", nullptr); }

std::string dumpConfig(const ConfigSection& root) {
  std::string out;
  DumpVisitor v("", out, 0);
  // Non-const visit() only because loading shares it; DumpVisitor writes nothing.
  const_cast<ConfigSection&>(root).visit(v);
  return out.empty() ? "{}\n" : out;
}

std::string describeConfig(const ConfigSection& root) {
  std::string out = "| Key | Type | Default | Description |\n| --- | --- | --- | --- |\n";
  DescribeVisitor v("", out);
  const_cast<ConfigSection&>(root).visit(v);  // read-only, as in dumpConfig
  return out;
}

}  // namespace latentcell::core
