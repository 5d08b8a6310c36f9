#!/usr/bin/env bash
# Runs one latentcell fuzz target on a scratch copy of a seed corpus (the seeds stay as they are).
# Usage: fuzz/run_fuzzer.sh FUZZER SEED_DIR [libFuzzer flags...]
#   the suite:   -runs=800 -seed=1              (cmake/Fuzz.cmake)
#   longer runs: -max_total_time=3600 -jobs=2   (see docs/data.md)
# A crash, a sanitizer report, a leak or a hang fails the run; the input that caused it is kept
# under fuzz-artifacts/ next to the fuzzer, and the path printed, to reproduce with FUZZER FILE.
set -euo pipefail
fuzzer=$1
seeds=$2
shift 2
if [[ ! -x $fuzzer ]]; then
  echo "error: $fuzzer is not built (build the latentcell_fuzz target, e.g. ninja -C build latentcell_fuzz)" >&2
  exit 1
fi
here=$(cd "$(dirname "$0")" && pwd)
artifacts=$(dirname "$fuzzer")/fuzz-artifacts
mkdir -p "$artifacts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$seeds" "$work/corpus"
# allocator_may_return_null: a corrupt size must end in a caught bad_alloc, as it does without ASan.
# The LSan suppressions cover leaks of libhdf5 itself on failed opens (see lsan.supp).
export ASAN_OPTIONS=allocator_may_return_null=1:${ASAN_OPTIONS:-}
export LSAN_OPTIONS=suppressions=$here/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:-}
export UBSAN_OPTIONS=print_stacktrace=1:${UBSAN_OPTIONS:-}
# -malloc_limit_mb: libhdf5 1.10.8 allocates metadata buffers of whatever size a corrupt header
# claims (found: 2.9 GB for a group's local heap in a 38 KB file, which latentcell now rejects
# first) and only then finds that the read runs past the end of the file; such buffers are never
# touched. libFuzzer would call the malloc itself an out-of-memory; memory actually used is still
# bounded by -rss_limit_mb.
exec "$fuzzer" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=1000000 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$@" "$work/corpus"
