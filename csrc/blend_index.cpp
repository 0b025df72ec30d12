// Capped blend index (see blend_index.h).  Floating-point expressions are kept
// in the same order as the NumPy reference and contraction into FMA is disabled,
// so both produce bit-identical results.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "blend_index.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace megatron_lang {

namespace {

constexpr int64_t kMaxSources = std::numeric_limits<int16_t>::max();

// Renormalised weights of the active sources; inactive entries are left untouched.
void renormalise(const std::vector<double>& weights, const std::vector<int64_t>& active,
                 std::vector<double>& normalised) {
  double total = 0.0;
  for (int64_t i : active) total += weights[i];
  for (int64_t i : active) normalised[i] = weights[i] / total;
}

}  // namespace

void check_capped_blend_inputs(const std::vector<double>& weights,
                               const std::vector<int64_t>& caps, int64_t size) {
  const int64_t n = static_cast<int64_t>(weights.size());
  if (n == 0) throw std::invalid_argument("capped blend index: no sources given");
  if (n > kMaxSources) {
    throw std::invalid_argument("capped blend index: " + std::to_string(n) +
                                " sources exceed the int16 limit of " +
                                std::to_string(kMaxSources));
  }
  if (static_cast<int64_t>(caps.size()) != n) {
    throw std::invalid_argument("capped blend index: " + std::to_string(n) + " weights but " +
                                std::to_string(caps.size()) + " caps");
  }
  if (size < 0) throw std::invalid_argument("capped blend index: size must be >= 0");
  int64_t supply = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(weights[i]) || weights[i] <= 0.0) {
      throw std::invalid_argument("capped blend index: source " + std::to_string(i) +
                                  " has weight " + std::to_string(weights[i]) +
                                  "; weights must be finite and > 0");
    }
    if (caps[i] < 0) {
      throw std::invalid_argument("capped blend index: source " + std::to_string(i) +
                                  " has a negative cap " + std::to_string(caps[i]));
    }
    supply = (caps[i] > std::numeric_limits<int64_t>::max() - supply)
                 ? std::numeric_limits<int64_t>::max()
                 : supply + caps[i];
  }
  if (supply < size) {
    throw std::invalid_argument("capped blend index: the caps supply only " +
                                std::to_string(supply) + " samples in total but " +
                                std::to_string(size) + " were requested");
  }
}

void build_capped_blend_index(const std::vector<double>& weights,
                              const std::vector<int64_t>& caps, int64_t size,
                              int16_t* dataset_index, int64_t* dataset_sample_index,
                              int64_t* drawn_per_source) {
  const int64_t n = static_cast<int64_t>(weights.size());
  std::vector<int64_t> counts(n, 0);
  std::vector<int64_t> active;
  active.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (caps[i] > 0) active.push_back(i);
  }
  std::vector<double> normalised(n, 0.0);
  if (!active.empty()) renormalise(weights, active, normalised);

  int64_t drawn_active = 0;  // samples drawn so far from the currently active sources
  for (int64_t t = 0; t < size; ++t) {
    const double next = static_cast<double>(drawn_active + 1);
    int64_t best = active[0];
    double best_deficit = normalised[best] * next - static_cast<double>(counts[best]);
    for (size_t k = 1; k < active.size(); ++k) {
      const int64_t i = active[k];
      const double deficit = normalised[i] * next - static_cast<double>(counts[i]);
      if (deficit > best_deficit) {
        best_deficit = deficit;
        best = i;
      }
    }
    dataset_index[t] = static_cast<int16_t>(best);
    dataset_sample_index[t] = counts[best];
    counts[best] += 1;
    drawn_active += 1;
    if (counts[best] >= caps[best]) {
      // Exhausted: drop it from the active set and renormalise the rest.
      drawn_active -= counts[best];
      for (size_t k = 0; k < active.size(); ++k) {
        if (active[k] == best) {
          active.erase(active.begin() + static_cast<std::ptrdiff_t>(k));
          break;
        }
      }
      if (active.empty()) {
        if (t + 1 < size) throw std::logic_error("capped blend index: ran out of sources");
        break;
      }
      renormalise(weights, active, normalised);
    }
  }
  for (int64_t i = 0; i < n; ++i) drawn_per_source[i] = counts[i];
}

}  // namespace megatron_lang
