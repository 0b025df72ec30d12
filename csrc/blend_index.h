// Capped blend index: interleave samples from several sources by weight while
// never drawing more than a per-source cap.  See blend_index.cpp and the NumPy
// reference in megatron_lang/data/blend_index.py (the two must agree exactly).
#pragma once

#include <cstdint>
#include <vector>

namespace megatron_lang {

// Validates the inputs of build_capped_blend_index; throws std::invalid_argument
// with a message naming the offending source.
void check_capped_blend_inputs(const std::vector<double>& weights,
                               const std::vector<int64_t>& caps, int64_t size);

// Fills dataset_index[0..size) with a source id per sample and
// dataset_sample_index[0..size) with that sample's position inside its source.
//
// Greedy largest deficit: among the *active* sources (those below their cap),
// with renormalised weights w'_i = w_i / sum_active(w) and A the number of
// samples drawn so far from the active sources, sample t goes to the source
// maximising w'_i * (A + 1) - count_i (lowest id on ties).  A source whose
// count reaches its cap leaves the active set.  Pure function of its inputs
// (deterministic); does not touch Python objects, so callers may release the GIL.
void build_capped_blend_index(const std::vector<double>& weights,
                              const std::vector<int64_t>& caps, int64_t size,
                              int16_t* dataset_index, int64_t* dataset_sample_index,
                              int64_t* drawn_per_source);

}  // namespace megatron_lang
