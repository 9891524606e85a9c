//! Log-linear latency buckets: the index of a latency, the bounds of a bucket, and percentiles
//! over a bucket array.
//!
//! Below 1,024 ns the buckets are linear, 128 ns wide. From 2^10 ns (about 1 µs) up to 2^37 ns
//! (about 137 s) every power of two is split into [`SUB_BUCKETS`] equal buckets, so a bucket is
//! at most 1/8 of its lower bound wide. Latencies of 2^37 ns and more share the last bucket.
//!
//! A percentile reports the midpoint of the bucket it falls in: at most half a bucket off, so
//! within 6.25 % of the true value from 1 µs up (and within 64 ns below it). In the overflow
//! bucket it reports the bucket's lower bound, 2^37 ns.

/// Bits of the value kept below its leading bit: 2^3 = 8 buckets per power of two.
const SUB_BITS: u32 = 3;
/// Buckets per power of two.
pub(crate) const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// The first power of two split log-linearly; below it the buckets are linear.
const MIN_EXP: u32 = 10;
/// Latencies at or above 2^MAX_EXP ns land in the overflow bucket.
const MAX_EXP: u32 = 37;
/// The overflow bucket's index.
const OVERFLOW: usize = ((MAX_EXP - MIN_EXP) as usize + 1) << SUB_BITS;
/// Number of buckets, the overflow bucket included.
pub(crate) const BUCKETS: usize = OVERFLOW + 1;

/// The bucket a latency of `nanos` falls in.
#[inline]
pub(crate) fn bucket_index(nanos: u64) -> usize {
    let exp = (u64::BITS - 1 - (nanos | 1).leading_zeros()).max(MIN_EXP);
    // For exp = MIN_EXP this is nanos >> 7: 0..=15, the linear buckets and the first
    // log-linear ones alike; above it the leading bit puts the mantissa in 8..=15.
    let index = (((exp - MIN_EXP) as usize) << SUB_BITS) + (nanos >> (exp - SUB_BITS)) as usize;
    index.min(OVERFLOW)
}

/// The half-open range `[lower, upper)` of a bucket, in nanoseconds. The overflow bucket's
/// upper bound is `u64::MAX`.
pub(crate) fn bucket_bounds(index: usize) -> (u64, u64) {
    if index >= OVERFLOW {
        return (1 << MAX_EXP, u64::MAX);
    }
    if index < SUB_BUCKETS {
        let width = 1 << (MIN_EXP - SUB_BITS);
        let lower = index as u64 * width;
        return (lower, lower + width);
    }
    let exp = (index >> SUB_BITS) as u32 + MIN_EXP - 1;
    let mantissa = (index & (SUB_BUCKETS - 1)) as u64 + SUB_BUCKETS as u64;
    let width = 1u64 << (exp - SUB_BITS);
    (mantissa * width, (mantissa + 1) * width)
}

/// The value a percentile in this bucket reports, in nanoseconds: the midpoint, or the lower
/// bound of the overflow bucket.
pub(crate) fn bucket_value_nanos(index: usize) -> u64 {
    let (lower, upper) = bucket_bounds(index);
    if index >= OVERFLOW {
        lower
    } else {
        lower + (upper - lower) / 2
    }
}

/// The value at quantile `q` (0..=1) of the latencies counted in `buckets`, in nanoseconds, or
/// `None` when nothing was counted. The rank is `ceil(q × total)`, at least 1.
pub(crate) fn quantile_nanos(buckets: &[u64; BUCKETS], total: u64, q: f64) -> Option<u64> {
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (index, &count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(bucket_value_nanos(index));
        }
    }
    // The counts summed to less than `total`: only when the caller's total is wrong.
    Some(bucket_value_nanos(OVERFLOW))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_a_few_hundred_buckets() {
        assert_eq!(BUCKETS, 225);
    }

    #[test]
    fn bounds_tile_the_whole_range_without_gaps() {
        let mut expected_lower = 0;
        for index in 0..BUCKETS {
            let (lower, upper) = bucket_bounds(index);
            assert_eq!(lower, expected_lower, "bucket {index}");
            assert!(upper > lower, "bucket {index}");
            expected_lower = upper;
        }
        assert_eq!(expected_lower, u64::MAX);
        assert_eq!(bucket_bounds(8), (1024, 1152), "log-linear from about 1 µs");
        assert!(
            bucket_bounds(OVERFLOW).0 > 100_000_000_000,
            "up to about 137 s"
        );
    }

    #[test]
    fn every_value_lands_in_the_bucket_whose_bounds_hold_it() {
        let mut values: Vec<u64> = (0..5_000).collect();
        for exp in 0..64 {
            let p = 1u64 << exp;
            values.extend([p - 1, p, p + 1, p + p / 3, p.saturating_mul(3) / 2]);
        }
        values.push(u64::MAX);
        for nanos in values {
            let index = bucket_index(nanos);
            let (lower, upper) = bucket_bounds(index);
            assert!(
                lower <= nanos && (nanos < upper || index == OVERFLOW),
                "{nanos} in bucket {index} [{lower}, {upper})"
            );
        }
    }

    #[test]
    fn the_index_is_monotone() {
        let mut previous = 0;
        let mut nanos = 0u64;
        while nanos < 1 << 40 {
            let index = bucket_index(nanos);
            assert!(index >= previous, "{nanos}");
            previous = index;
            nanos = nanos + 1 + nanos / 997;
        }
        assert_eq!(previous, OVERFLOW);
    }

    #[test]
    fn a_bucket_is_at_most_an_eighth_of_its_lower_bound_wide() {
        for index in SUB_BUCKETS..OVERFLOW {
            let (lower, upper) = bucket_bounds(index);
            assert!((upper - lower) * 8 <= lower, "bucket {index}");
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution_are_within_the_stated_error() {
        // 1..=100,000 µs, uniformly: the true q-quantile is q × 100 ms.
        let mut buckets = [0u64; BUCKETS];
        let total = 100_000;
        for micros in 1..=total {
            buckets[bucket_index(micros * 1_000)] += 1;
        }
        for q in [0.01, 0.5, 0.9, 0.95, 0.99, 0.999] {
            let truth = q * total as f64 * 1_000.0;
            let got = quantile_nanos(&buckets, total, q).unwrap() as f64;
            let error = (got - truth).abs() / truth;
            assert!(error <= 0.0625, "q {q}: {got} vs {truth} ({error})");
        }
        assert_eq!(quantile_nanos(&[0; BUCKETS], 0, 0.5), None);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let mut buckets = [0u64; BUCKETS];
        buckets[bucket_index(20_000_000)] += 1;
        for q in [0.0, 0.5, 1.0] {
            let got = quantile_nanos(&buckets, 1, q).unwrap();
            assert!(got.abs_diff(20_000_000) <= 20_000_000 / 16, "{q}: {got}");
        }
    }
}
