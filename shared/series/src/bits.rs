//! Fixed-width bit packing, least significant bit first.
//!
//! Used for frame-of-reference columns: once the smallest residual is subtracted, a
//! counter that grows by "somewhere between 0 and 300 KiB" needs 19 bits per sample
//! rather than the 24 a varint spends.

/// Mask with the low `width` bits set (`width` <= 64).
#[inline]
pub(crate) fn mask(width: u32) -> u64 {
    if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

/// Bits needed for `v` (0 for 0).
#[inline]
pub(crate) fn width_of(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Bytes taken by `count` values of `width` bits.
#[inline]
pub(crate) fn packed_len(count: usize, width: u32) -> usize {
    (count * width as usize).div_ceil(8)
}

/// Appends values of one width to a byte vector.
pub(crate) struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    // Pending bits; a u128 so that up to 7 pending bits plus one 64-bit value fit.
    acc: u128,
    len: u32,
}

impl<'a> BitWriter<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            out,
            acc: 0,
            len: 0,
        }
    }

    #[inline]
    pub(crate) fn put(&mut self, v: u64, width: u32) {
        self.acc |= u128::from(v & mask(width)) << self.len;
        self.len += width;
        while self.len >= 8 {
            self.out.push(self.acc.to_le_bytes()[0]);
            self.acc >>= 8;
            self.len -= 8;
        }
    }

    pub(crate) fn finish(self) {
        if self.len > 0 {
            self.out.push(self.acc.to_le_bytes()[0]);
        }
    }
}

/// Reads values of one width from a slice the caller has already sized with
/// [`packed_len`]; bytes past the end read as zero, so it cannot panic either way.
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u128,
    len: u32,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            acc: 0,
            len: 0,
        }
    }

    #[inline]
    pub(crate) fn get(&mut self, width: u32) -> u64 {
        while self.len < width {
            let b = self.bytes.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            self.acc |= u128::from(b) << self.len;
            self.len += 8;
        }
        let v = low_u64(self.acc) & mask(width);
        // `width` may be 64 and `acc` is 128 bits wide, so this shift is always in range.
        self.acc >>= width;
        self.len -= width;
        v
    }
}

/// The low 64 bits of the accumulator; the bits above are the next values'.
#[inline]
fn low_u64(x: u128) -> u64 {
    let b = x.to_le_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_width() {
        for width in 0..=64u32 {
            let values: Vec<u64> = (0..37u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & mask(width))
                .collect();
            let mut out = Vec::new();
            let mut w = BitWriter::new(&mut out);
            for &v in &values {
                w.put(v, width);
            }
            w.finish();
            assert_eq!(out.len(), packed_len(values.len(), width));
            let mut r = BitReader::new(&out);
            for &v in &values {
                assert_eq!(r.get(width), v, "width {width}");
            }
        }
    }

    #[test]
    fn widths() {
        assert_eq!(width_of(0), 0);
        assert_eq!(width_of(1), 1);
        assert_eq!(width_of(255), 8);
        assert_eq!(width_of(u64::MAX), 64);
    }
}
