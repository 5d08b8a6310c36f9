#!/usr/bin/env bash
# Installs what latentcell needs and builds it; safe and quick to rerun.
#   1. Debian packages (apt) that are missing.
#   2. The Python env with the torch wheel (LibTorch) and the reference packages, in a cache outside
#      the checkout (LATENTCELL_CACHE, default ~/.cache/latentcell), reinstalled only when
#      scripts/requirements.txt changes.
#   3. CMake configure (once) and an incremental ninja build in ./build (ccache keeps clean builds cheap).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cache=${LATENTCELL_CACHE:-$HOME/.cache/latentcell}
build=${LATENTCELL_BUILD_DIR:-$root/build}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- 1. Debian packages ---------------------------------------------------------------------------
packages=(build-essential cmake ninja-build ccache git pkg-config python3 python3-venv
          libhdf5-dev liblzf-dev liblemon-dev libgloo-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
          libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The torch wheel is a CUDA build: its CMake config needs the CUDA toolkit (nvcc) at configure time.
if ! command -v nvcc >/dev/null 2>&1; then
  for d in /usr/local/cuda/bin /usr/local/cuda-13.0/bin; do [ -x "$d/nvcc" ] && export PATH="$d:$PATH"; done
fi
if ! command -v nvcc >/dev/null 2>&1; then
  echo "error: the CUDA 13 toolkit (nvcc) was not found; install it (e.g. to /usr/local/cuda) — the torch" \
       "wheel's CMake config needs it to configure, even for CPU-only use" >&2
  exit 1
fi

# --- 2. Python env with LibTorch ------------------------------------------------------------------
venv="$cache/venv"
stamp="$venv/.latentcell-requirements"
want=$(cat scripts/requirements.txt scripts/python-constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing the Python env (torch wheel with LibTorch, references) into $venv"
  mkdir -p "$cache"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r scripts/requirements.txt -c scripts/python-constraints.txt
  echo "$want" > "$stamp"
fi
torch_prefix=$("$venv/bin/python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')

# --- 3. Configure and build -----------------------------------------------------------------------
if [ ! -f "$build/build.ninja" ]; then
  say "configuring $build"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_PREFIX_PATH="$torch_prefix" -DLATENTCELL_PYTHON="$venv/bin/python" > "$build.configure.log" 2>&1 ||
    { cat "$build.configure.log" >&2; exit 1; }
fi
say "building (ninja -j${LATENTCELL_JOBS:-$(nproc)})"
ninja -C "$build" -j"${LATENTCELL_JOBS:-$(nproc)}"
