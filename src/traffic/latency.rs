//! Latency histograms small enough to keep one per tracked tenant and per
//! server in every time slot: 40 counters on half-octave buckets (each bucket
//! is 1.5 or 1.33 times as wide as the one below), from under 64 µs to over
//! 33 s. A quantile read off them is within its bucket, interpolated: good to
//! about ±20%, which is what "p99 went from 4 to 40 ms" needs. The bucket of a
//! latency is found with two shifts and a count of leading zeros, no float.

use std::time::Duration;

/// How many buckets a histogram has.
pub(crate) const BUCKETS: usize = 40;

/// log2 of the first bucket's upper bound, in µs: bucket 0 holds everything
/// under 64 µs.
const FIRST_LOG2: u32 = 6;

/// The bucket a latency falls in.
#[inline]
pub(crate) fn bucket(took: Duration) -> usize {
    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    if us < 1 << FIRST_LOG2 {
        return 0;
    }
    let log2 = 63 - us.leading_zeros();
    // The bit after the leading one: the upper half of the octave.
    let upper_half = (us >> (log2 - 1)) & 1;
    let i = 1 + 2 * (log2 - FIRST_LOG2) as usize + upper_half as usize;
    i.min(BUCKETS - 1)
}

/// The lower bound of bucket `i`, in µs.
fn lower_us(i: usize) -> f64 {
    if i == 0 {
        return 0.0;
    }
    let log2 = FIRST_LOG2 + (i as u32 - 1) / 2;
    let base = (1u64 << log2) as f64;
    match (i - 1) % 2 {
        0 => base,
        _ => base * 1.5,
    }
}

/// The upper bound of bucket `i`, in µs (the last bucket's is taken as twice
/// its lower bound).
fn upper_us(i: usize) -> f64 {
    if i + 1 < BUCKETS {
        lower_us(i + 1)
    } else {
        lower_us(i) * 2.0
    }
}

/// One time slot's latencies (a slot's counts fit in 32 bits: four billion
/// requests to one tenant in seconds is beyond any router thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Latencies([u32; BUCKETS]);

impl Default for Latencies {
    fn default() -> Self {
        Latencies([0; BUCKETS])
    }
}

impl Latencies {
    #[inline]
    pub(crate) fn observe(&mut self, took: Duration) {
        let n = &mut self.0[bucket(took)];
        *n = n.saturating_add(1);
    }

    pub(crate) fn clear(&mut self) {
        self.0 = [0; BUCKETS];
    }
}

/// Latencies summed over slots and router threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LatencySum([u64; BUCKETS]);

impl Default for LatencySum {
    fn default() -> Self {
        LatencySum([0; BUCKETS])
    }
}

impl LatencySum {
    pub(crate) fn add(&mut self, slot: &Latencies) {
        for (sum, n) in self.0.iter_mut().zip(slot.0) {
            *sum += u64::from(n);
        }
    }

    /// How many latencies were observed.
    pub(crate) fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The latency under which a share `q` (0 to 1) of the observed ones
    /// fall, in milliseconds, interpolated within its bucket; `None` with
    /// none observed.
    pub(crate) fn quantile_ms(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // The rank of the latency wanted, 1-based: the 99th of 100 for p99.
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut below = 0u64;
        for (i, &n) in self.0.iter().enumerate() {
            if n > 0 && below + n >= rank {
                let share = (rank - below) as f64 / n as f64;
                let (lo, hi) = (lower_us(i), upper_us(i));
                return Some((lo + (hi - lo) * share) / 1000.0);
            }
            below += n;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_half_octaves_from_64_microseconds() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_micros(63)), 0);
        assert_eq!(bucket(Duration::from_micros(64)), 1);
        assert_eq!(bucket(Duration::from_micros(95)), 1);
        assert_eq!(bucket(Duration::from_micros(96)), 2);
        assert_eq!(bucket(Duration::from_micros(128)), 3);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
        // Every latency's bucket holds it.
        for us in [
            1, 64, 100, 999, 1_000, 4_321, 250_000, 9_000_000, 30_000_000,
        ] {
            let i = bucket(Duration::from_micros(us));
            let us = us as f64;
            assert!(
                lower_us(i) <= us && us < upper_us(i),
                "{us} µs in bucket {i}"
            );
        }
        assert!(upper_us(BUCKETS - 2) > 30e6, "30 s is within the buckets");
    }

    #[test]
    fn quantiles_fall_in_the_bucket_of_the_latency_at_their_rank() {
        let mut slot = Latencies::default();
        for _ in 0..98 {
            slot.observe(Duration::from_millis(2));
        }
        slot.observe(Duration::from_millis(40));
        slot.observe(Duration::from_millis(900));
        let mut sum = LatencySum::default();
        sum.add(&slot);
        sum.add(&Latencies::default());
        assert_eq!(sum.count(), 100);
        let p50 = sum.quantile_ms(0.5).unwrap();
        assert!((1.5..=2.1).contains(&p50), "p50 {p50}");
        let p99 = sum.quantile_ms(0.99).unwrap();
        assert!((32.0..=49.2).contains(&p99), "p99 {p99}");
        let max = sum.quantile_ms(1.0).unwrap();
        assert!((786.0..=1049.0).contains(&max), "max {max}");
        assert_eq!(LatencySum::default().quantile_ms(0.5), None);
    }
}
