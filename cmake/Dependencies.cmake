# Third-party dependencies. Debian packages (scripts/setup.sh installs them) plus LibTorch
# from the pip wheel. Each find_package names what the project uses it for.

# LibTorch (tensors, autograd, nn, c10d). Found through torch.utils.cmake_prefix_path, which
# scripts/setup.sh passes as CMAKE_PREFIX_PATH. The wheel is a CUDA build, so its config needs
# the CUDA toolkit at configure time; CUDA and NCCL paths compile and link even without a GPU.
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  # Without a list, torch's config try_runs a GPU probe, which fails on machines without a GPU.
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
endif()
find_package(Torch REQUIRED)
# libtorch_cuda finds the wheel's NCCL, cuDNN and CUDA runtime through its $ORIGIN rpath at run
# time; the linker needs the same directories, or it picks an older system NCCL and fails.
get_filename_component(LATENTCELL_TORCH_SITE "${TORCH_INSTALL_PREFIX}/.." ABSOLUTE)
file(GLOB _lc_nvidia_libdirs "${LATENTCELL_TORCH_SITE}/nvidia/*/lib")
set(LATENTCELL_TORCH_LINK_OPTIONS "")
foreach(_dir IN LISTS _lc_nvidia_libdirs)
  list(APPEND LATENTCELL_TORCH_LINK_OPTIONS "-Wl,-rpath-link,${_dir}")
endforeach()
message(STATUS "latentcell: torch ${Torch_VERSION} from ${TORCH_INSTALL_PREFIX}")

find_package(yaml-cpp REQUIRED)          # YAML configs and run state
find_package(spdlog REQUIRED)            # logging
find_package(fmt REQUIRED)               # string formatting (spdlog's, used directly too)
find_package(CLI11 REQUIRED)             # command line with subcommands
find_package(nlohmann_json REQUIRED)     # safetensors headers, JSONL metrics
find_package(HDF5 REQUIRED COMPONENTS C)  # h5ad files (HDF5 C API)
find_package(Threads REQUIRED)

if(LATENTCELL_BUILD_TESTS)
  find_package(GTest REQUIRED)           # unit and golden tests
endif()
if(LATENTCELL_BUILD_BENCH)
  find_package(benchmark REQUIRED)       # bench/
endif()

# The reference Python env for golden and parity tests (scripts/setup.sh creates it).
if(NOT LATENTCELL_PYTHON)
  set(_lc_default_python "$ENV{HOME}/.cache/latentcell/venv/bin/python")
  if(EXISTS "${_lc_default_python}")
    set(LATENTCELL_PYTHON "${_lc_default_python}" CACHE FILEPATH "" FORCE)
  endif()
endif()
if(LATENTCELL_PYTHON)
  message(STATUS "latentcell: reference Python env ${LATENTCELL_PYTHON}")
else()
  message(STATUS "latentcell: no reference Python env; tests that need it will skip")
endif()
