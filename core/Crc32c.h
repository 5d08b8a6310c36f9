// CRC-32C (Castagnoli), the checksum of TFRecord (TensorBoard event files) and of latentcell's
// shard files.
//
// Debian ships no C/C++ CRC-32C library, so it lives here. Shards are checksummed when they are
// opened, gigabytes at a time, so x86-64 CPUs with SSE4.2 use the crc32 instruction (about 20x the
// table); other CPUs use a slicing-by-8 table. Both give the same value: one checksum, any machine.
#pragma once

#include <cstddef>
#include <cstdint>

namespace latentcell::core {

// CRC-32C of `size` bytes; pass a previous result as `crc` to continue it over more bytes
// (crc32c(b, n2, crc32c(a, n1)) == crc32c of a followed by b).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

// The portable table path alone, so tests can check that both paths agree on this machine.
uint32_t crc32cPortable(const void* data, size_t size, uint32_t crc = 0);

}  // namespace latentcell::core
