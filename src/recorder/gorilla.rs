//! The recorder's column codec, after Facebook's Gorilla (Pelkonen et al., VLDB 2015): times
//! as delta-of-delta in variable-width buckets, values as the XOR with the previous value with
//! its leading and trailing zero bits left out. A repeated value costs one bit, a sample one
//! interval after the last one bit of time.
//!
//! An absent value (a signal that was not read) is stored as [`ABSENT`], a NaN payload that
//! no reading produces (a read NaN is stored as the canonical one), so a column that stays
//! absent costs one bit a sample too.

/// The bit pattern that stands for "not read" in a value column.
const ABSENT: u64 = 0x7ff8_dead_beef_0001;

/// Bits appended to a growing byte buffer, most significant first.
#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte, 0..8 (0: a new byte is needed).
    used: u8,
}

impl BitWriter {
    fn push(&mut self, value: u64, bits: u8) {
        debug_assert!(bits <= 64);
        let mut left = bits;
        while left > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let room = 8 - self.used;
            let take = room.min(left);
            let chunk = ((value >> (left - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (room - take);
            self.used = (self.used + take) % 8;
            left -= take;
        }
    }

    fn bit(&mut self, set: bool) {
        self.push(u64::from(set), 1);
    }
}

/// Bits read back from a [`BitWriter`]'s bytes.
#[derive(Debug, Clone)]
struct BitReader<'a> {
    bytes: &'a [u8],
    /// The next bit, counted from the start.
    at: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, at: 0 }
    }

    fn take(&mut self, bits: u8) -> Option<u64> {
        let mut value = 0u64;
        for _ in 0..bits {
            let byte = *self.bytes.get(self.at / 8)?;
            let bit = (byte >> (7 - self.at % 8)) & 1;
            value = (value << 1) | u64::from(bit);
            self.at += 1;
        }
        Some(value)
    }

    fn bit(&mut self) -> Option<bool> {
        self.take(1).map(|b| b == 1)
    }
}

/// A column of times in milliseconds, delta-of-delta encoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimeColumn {
    bits: BitWriter,
    count: usize,
    last: i64,
    last_delta: i64,
}

/// The delta-of-delta buckets: the prefix's width (its value is all ones but the last bit)
/// and the payload's width. The last bucket takes any 64-bit value.
const BUCKETS: &[(u8, u8)] = &[(2, 7), (3, 9), (4, 12), (5, 20), (5, 64)];

impl TimeColumn {
    /// The encoded bits (the last byte padded with zeros) and how many values they hold.
    pub(crate) fn parts(&self) -> (&[u8], usize) {
        (&self.bits.bytes, self.count)
    }

    /// A complete column from [`TimeColumn::parts`] (read back from disk): it decodes; it
    /// must not be appended to.
    pub(crate) fn from_parts(bytes: Vec<u8>, count: usize) -> Self {
        TimeColumn {
            bits: BitWriter { bytes, used: 0 },
            count,
            ..Default::default()
        }
    }

    /// Appends a time (milliseconds since the Unix epoch).
    pub(crate) fn push(&mut self, millis: i64) {
        if self.count == 0 {
            self.bits.push(millis as u64, 64);
        } else {
            let delta = millis.wrapping_sub(self.last);
            let dod = delta.wrapping_sub(self.last_delta);
            if dod == 0 {
                self.bits.bit(false);
            } else {
                let (index, &(prefix, width)) = BUCKETS
                    .iter()
                    .enumerate()
                    .find(|(_, &(_, width))| width == 64 || fits(dod, width))
                    .expect("the last bucket takes any value");
                // Prefix: `index + 1` ones, then a zero, except the last bucket's all ones.
                let ones = (index + 1) as u8;
                let prefix_bits = if ones < prefix {
                    ((1u64 << ones) - 1) << 1
                } else {
                    (1u64 << prefix) - 1
                };
                self.bits.push(prefix_bits, prefix);
                self.bits.push(dod as u64 & mask(width), width);
            }
            self.last_delta = delta;
        }
        self.last = millis;
        self.count += 1;
    }

    /// Times appended so far.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bits.bytes.capacity()
    }

    /// Gives back unused capacity (once the column is complete).
    pub(crate) fn shrink(&mut self) {
        self.bits.bytes.shrink_to_fit();
    }

    /// The times, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        let mut reader = BitReader::new(&self.bits.bytes);
        let (mut last, mut last_delta) = (0i64, 0i64);
        (0..self.count).map_while(move |index| {
            if index == 0 {
                last = reader.take(64)? as i64;
                return Some(last);
            }
            let mut ones = 0u8;
            while usize::from(ones) < BUCKETS.len() && reader.bit()? {
                ones += 1;
            }
            let dod = match ones {
                0 => 0,
                n => {
                    let width = BUCKETS[usize::from(n) - 1].1;
                    sign_extend(reader.take(width)?, width)
                }
            };
            last_delta = last_delta.wrapping_add(dod);
            last = last.wrapping_add(last_delta);
            Some(last)
        })
    }
}

/// A column of optional values, XOR encoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct ValueColumn {
    bits: BitWriter,
    count: usize,
    last: u64,
    /// Leading and trailing zeros of the last meaningful XOR (its window).
    window: Option<(u8, u8)>,
}

impl ValueColumn {
    /// The encoded bits (the last byte padded with zeros) and how many values they hold.
    pub(crate) fn parts(&self) -> (&[u8], usize) {
        (&self.bits.bytes, self.count)
    }

    /// A complete column from [`ValueColumn::parts`] (read back from disk): it decodes; it
    /// must not be appended to.
    pub(crate) fn from_parts(bytes: Vec<u8>, count: usize) -> Self {
        ValueColumn {
            bits: BitWriter { bytes, used: 0 },
            count,
            ..Default::default()
        }
    }

    /// Appends a value; `None`: not read.
    pub(crate) fn push(&mut self, value: Option<f64>) {
        let bits = match value {
            None => ABSENT,
            Some(v) if v.is_nan() => f64::NAN.to_bits(),
            Some(v) => v.to_bits(),
        };
        if self.count == 0 {
            self.bits.push(bits, 64);
        } else {
            let xor = bits ^ self.last;
            if xor == 0 {
                self.bits.bit(false);
            } else {
                self.bits.bit(true);
                let leading = (xor.leading_zeros() as u8).min(31);
                let trailing = xor.trailing_zeros() as u8;
                match self.window {
                    Some((l, t)) if leading >= l && trailing >= t => {
                        self.bits.bit(false);
                        self.bits.push(xor >> t, 64 - l - t);
                    }
                    _ => {
                        self.bits.bit(true);
                        let meaningful = 64 - leading - trailing;
                        self.bits.push(u64::from(leading), 5);
                        // 64 meaningful bits are written as 0 (6 bits hold 0..63).
                        self.bits.push(u64::from(meaningful % 64), 6);
                        self.bits.push(xor >> trailing, meaningful);
                        self.window = Some((leading, trailing));
                    }
                }
            }
        }
        self.last = bits;
        self.count += 1;
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bits.bytes.capacity()
    }

    /// Gives back unused capacity (once the column is complete).
    pub(crate) fn shrink(&mut self) {
        self.bits.bytes.shrink_to_fit();
    }

    /// The values, in order; `None` where not read.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Option<f64>> + '_ {
        let mut reader = BitReader::new(&self.bits.bytes);
        let (mut last, mut window) = (0u64, (0u8, 0u8));
        (0..self.count).map_while(move |index| {
            if index == 0 {
                last = reader.take(64)?;
            } else if reader.bit()? {
                if reader.bit()? {
                    let leading = reader.take(5)? as u8;
                    let meaningful = match reader.take(6)? as u8 {
                        0 => 64,
                        m => m,
                    };
                    window = (leading, 64 - leading - meaningful);
                }
                let (leading, trailing) = window;
                let xor = reader.take(64 - leading - trailing)? << trailing;
                last ^= xor;
            }
            Some((last != ABSENT).then(|| f64::from_bits(last)))
        })
    }
}

fn mask(width: u8) -> u64 {
    if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

/// Whether `value` fits a two's-complement field of `width` bits.
fn fits(value: i64, width: u8) -> bool {
    let half = 1i64 << (width - 1);
    (-half..half).contains(&value)
}

fn sign_extend(value: u64, width: u8) -> i64 {
    if width == 64 {
        return value as i64;
    }
    let shift = 64 - width;
    ((value << shift) as i64) >> shift
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_regular_clock_costs_a_bit_a_sample() {
        let mut times = TimeColumn::default();
        for i in 0..1000 {
            times.push(1_700_000_000_000 + i * 1000);
        }
        let expected: Vec<i64> = (0..1000).map(|i| 1_700_000_000_000 + i * 1000).collect();
        assert_eq!(times.iter().collect::<Vec<_>>(), expected);
        // 64 bits, one bucket for the first delta, then a bit each.
        assert!(
            times.bits.bytes.len() <= 8 + 3 + 1000 / 8 + 1,
            "{}",
            times.bits.bytes.len()
        );
    }

    #[test]
    fn a_steady_value_costs_a_bit_and_absent_is_not_zero() {
        let mut values = ValueColumn::default();
        let input = [
            Some(0.5),
            Some(0.5),
            None,
            None,
            Some(0.0),
            Some(f64::NAN),
            Some(-1e300),
        ];
        for v in input {
            values.push(v);
        }
        let out: Vec<Option<f64>> = values.iter().collect();
        assert_eq!(out[..5], input[..5]);
        assert!(out[5].is_some_and(f64::is_nan));
        assert_eq!(out[6], Some(-1e300));
    }

    proptest! {
        #[test]
        fn times_round_trip(start in any::<i64>(), steps in proptest::collection::vec(any::<i64>(), 0..200)) {
            let mut column = TimeColumn::default();
            let mut expected = vec![start];
            column.push(start);
            let mut t = start;
            for step in steps {
                // Mostly small jitter, sometimes anything.
                t = t.wrapping_add(if step % 3 == 0 { step } else { 1000 + step % 300 });
                expected.push(t);
                column.push(t);
            }
            prop_assert_eq!(column.iter().collect::<Vec<_>>(), expected);
        }

        #[test]
        fn values_round_trip(values in proptest::collection::vec(proptest::option::of(any::<f64>().prop_filter("not NaN", |v| !v.is_nan())), 0..200)) {
            let mut column = ValueColumn::default();
            for &v in &values {
                column.push(v);
            }
            prop_assert_eq!(column.iter().collect::<Vec<_>>(), values);
        }
    }
}
