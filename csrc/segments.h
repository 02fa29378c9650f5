// segments.h: the chunk table of a segmented flat buffer, shared by every multi-tensor kernel.
//
// Defines:
//   kSegmentChunk                   elements per chunk (4096 fp32 = 16 KiB)
//   SegmentChunks                   a view of a chunk table (pointers into one int64 buffer)
//   segment_chunks_view(...)        FASTRES_HD: SegmentChunks over a table buffer
//   segment_chunk_count(...)        host: number of chunks C for given offsets (validates them)
//   segment_chunk_table_size(S, C)  host: int64 elements of the table buffer
//   fill_segment_chunk_table(...)   host: writes the table
//
// A flat buffer holds S segments (e.g. the 161 tensors of ResNet-50): segment s is
// flat[offsets[s] : offsets[s+1]]. Each segment is cut into chunks of kSegmentChunk
// elements, the last one shorter; a segment of length 0 has no chunk. Kernels run one
// block (CUDA) or one loop iteration (OpenMP) per chunk, so the work is balanced whatever
// the segment sizes, and the cut depends only on the offsets: never on the thread count or
// the GPU. That is what makes the two-stage reductions deterministic.
//
// Table layout, one int64 buffer of segment_chunk_table_size(S, C) elements:
//   [0, S+1)              seg_first_chunk: chunks of segment s are [first[s], first[s+1])
//   [S+1, S+1+C)          chunk_begin:     first element of chunk c in the flat buffer
//   [S+1+C, S+1+2C)       chunk_end:       one past its last element
//   [S+1+2C, S+1+3C)      chunk_seg:       the segment chunk c belongs to
// Couplings: fastres/kernels/ops.py allocates the buffer with this size and moves it to the device
// of the flat buffer; the stage-1 kernels write one partial per chunk, in chunk order, and
// the stage-2 kernels read them back through seg_first_chunk. A fused LARS update reads
// chunk_seg to find the trust ratio of its chunk.
#pragma once

#include "common.h"

namespace fastres {

constexpr int64_t kSegmentChunk = 4096;

struct SegmentChunks {
  const int64_t* seg_first_chunk;  // S + 1
  const int64_t* chunk_begin;      // C
  const int64_t* chunk_end;        // C
  const int64_t* chunk_seg;        // C
  int64_t num_segments;            // S
  int64_t num_chunks;              // C
};

FASTRES_HD SegmentChunks segment_chunks_view(const int64_t* table, int64_t S, int64_t C) {
  SegmentChunks t;
  t.seg_first_chunk = table;
  t.chunk_begin = table + (S + 1);
  t.chunk_end = table + (S + 1) + C;
  t.chunk_seg = table + (S + 1) + 2 * C;
  t.num_segments = S;
  t.num_chunks = C;
  return t;
}

#if !defined(__CUDACC_RTC__)  // host side: builds the table (NVRTC compiles device code only)
inline int64_t segment_chunk_table_size(int64_t S, int64_t C) { return (S + 1) + 3 * C; }

// Number of chunks for offsets[0..S]; throws std::invalid_argument (naming `offsets`) unless
// 0 <= offsets[0] <= offsets[1] <= ... <= offsets[S].
inline int64_t segment_chunk_count(const int64_t* offsets, int64_t S) {
  check_arg(S >= 0, "offsets must hold at least one element (S + 1 boundaries)");
  check_arg(offsets[0] >= 0, "offsets[0] must be >= 0, got " + std::to_string(offsets[0]));
  int64_t C = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t len = offsets[s + 1] - offsets[s];
    check_arg(len >= 0, "offsets must be nondecreasing: offsets[" + std::to_string(s) +
                            "]=" + std::to_string(offsets[s]) + " > offsets[" +
                            std::to_string(s + 1) + "]=" + std::to_string(offsets[s + 1]));
    C += CEIL_DIV(len, kSegmentChunk);
  }
  return C;
}

// Writes the table for offsets[0..S] into table[0 .. segment_chunk_table_size(S, C)).
// C must be segment_chunk_count(offsets, S).
inline void fill_segment_chunk_table(const int64_t* offsets, int64_t S, int64_t C,
                                     int64_t* table) {
  int64_t* first = table;
  int64_t* begin = table + (S + 1);
  int64_t* end = begin + C;
  int64_t* seg = end + C;
  int64_t c = 0;
  for (int64_t s = 0; s < S; ++s) {
    first[s] = c;
    for (int64_t b = offsets[s]; b < offsets[s + 1]; b += kSegmentChunk, ++c) {
      check_arg(c < C, "fill_segment_chunk_table: C does not match the offsets");
      begin[c] = b;
      end[c] = (offsets[s + 1] - b < kSegmentChunk) ? offsets[s + 1] : b + kSegmentChunk;
      seg[c] = s;
    }
  }
  first[S] = c;
  check_arg(c == C, "fill_segment_chunk_table: C does not match the offsets");
}
#endif

}  // namespace fastres
