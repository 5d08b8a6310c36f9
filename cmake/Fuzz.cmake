# libFuzzer targets for the h5ad and shard readers (fuzz/), built with clang as an ExternalProject
# and run briefly in the default suite: a fixture makes the seed corpora with the latentcell binary
# (fuzz/make_corpus.sh), then each target runs a fixed number of inputs from a fixed seed
# (fuzz/run_fuzzer.sh), so the suite is reproducible; docs/data.md says how to run them for longer.
# Without clang's libFuzzer the fuzz tests are registered anyway and skip, saying why.
include(ExternalProject)

find_program(LATENTCELL_CLANGXX NAMES clang++ clang++-16 clang++-15 clang++-14)
set(LATENTCELL_FUZZ_REASON "")
if(NOT LATENTCELL_CLANGXX)
  set(LATENTCELL_FUZZ_REASON "clang++ not found (install clang to build the libFuzzer targets)")
else()
  # libFuzzer ships with clang's compiler-rt, which some installs lack: link a trivial target.
  set(_probe ${CMAKE_BINARY_DIR}/fuzz-probe.cpp)
  file(WRITE ${_probe} "#include <cstddef>\n#include <cstdint>\nextern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(COMMAND ${LATENTCELL_CLANGXX} -fsanitize=fuzzer,address ${_probe} -o ${CMAKE_BINARY_DIR}/fuzz-probe
                  RESULT_VARIABLE _probe_result OUTPUT_QUIET ERROR_QUIET)
  if(NOT _probe_result EQUAL 0)
    set(LATENTCELL_FUZZ_REASON "${LATENTCELL_CLANGXX} cannot link -fsanitize=fuzzer,address (install libclang-rt-dev / compiler-rt)")
  endif()
endif()

set(LATENTCELL_FUZZ_DIR ${CMAKE_BINARY_DIR}/fuzz)
if(LATENTCELL_FUZZ_REASON STREQUAL "")
  message(STATUS "latentcell: fuzz targets built with ${LATENTCELL_CLANGXX}")
  ExternalProject_Add(latentcell_fuzz
    SOURCE_DIR ${CMAKE_SOURCE_DIR}/fuzz
    BINARY_DIR ${LATENTCELL_FUZZ_DIR}
    CMAKE_ARGS -DCMAKE_CXX_COMPILER=${LATENTCELL_CLANGXX}
               -DCMAKE_C_COMPILER=${CMAKE_C_COMPILER}
               -DCMAKE_BUILD_TYPE=RelWithDebInfo
               -DLATENTCELL_SOURCE_DIR=${CMAKE_SOURCE_DIR}
               -DLATENTCELL_FMT_INCLUDE=${TORCH_INSTALL_PREFIX}/include
               -DLATENTCELL_LOG_LIBRARY=$<TARGET_FILE:latentcell_log>
    BUILD_ALWAYS ON  # the sources live in the main tree; the sub-build decides what is stale
    INSTALL_COMMAND ""
    DEPENDS latentcell_log)
else()
  message(STATUS "latentcell: fuzz tests will skip: ${LATENTCELL_FUZZ_REASON}")
endif()

if(LATENTCELL_BUILD_TESTS)
  set(_corpus ${CMAKE_BINARY_DIR}/fuzz-corpus)
  if(LATENTCELL_FUZZ_REASON STREQUAL "")
    add_test(NAME fuzz.corpus COMMAND ${CMAKE_SOURCE_DIR}/fuzz/make_corpus.sh $<TARGET_FILE:latentcell> ${_corpus})
    set_tests_properties(fuzz.corpus PROPERTIES FIXTURES_SETUP fuzz_corpus)
    # Runs are counted, not timed: the same inputs on every machine. About 5 s each here.
    add_test(NAME fuzz.h5ad COMMAND ${CMAKE_SOURCE_DIR}/fuzz/run_fuzzer.sh ${LATENTCELL_FUZZ_DIR}/fuzz_h5ad
             ${_corpus}/h5ad -runs=800 -seed=1 -max_len=70000)
    add_test(NAME fuzz.shards COMMAND ${CMAKE_SOURCE_DIR}/fuzz/run_fuzzer.sh ${LATENTCELL_FUZZ_DIR}/fuzz_shards
             ${_corpus}/shards -runs=1500 -seed=1)
    set_tests_properties(fuzz.h5ad fuzz.shards PROPERTIES FIXTURES_REQUIRED fuzz_corpus TIMEOUT 300)
  else()
    foreach(_target h5ad shards)
      add_test(NAME fuzz.${_target} COMMAND sh -c "echo 'skipped: ${LATENTCELL_FUZZ_REASON}'; exit 77")
      set_tests_properties(fuzz.${_target} PROPERTIES SKIP_RETURN_CODE 77)
    endforeach()
  endif()
endif()
