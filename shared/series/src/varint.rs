//! Zigzag and LEB128 variable-length integers, plus a bounds-checked byte reader.
//!
//! Small magnitudes dominate the residuals this codec stores (jitter, slow drift), so a
//! variable-length form spends one byte on most of them instead of eight.

use crate::error::{Error, Result};

/// Maps signed to unsigned so that small negative numbers stay small
/// (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...).
#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Number of bytes [`put_uvarint`] writes for `v`.
#[inline]
pub(crate) fn uvarint_len(v: u64) -> usize {
    // One byte per started group of seven significant bits (at least one byte).
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[inline]
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v.to_le_bytes()[0] | 0x80);
        v >>= 7;
    }
    out.push(v.to_le_bytes()[0]);
}

#[inline]
pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// A cursor over a block's bytes; every read checks the bounds.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        let b = *self.bytes.get(self.pos).ok_or(Error::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(Error::Truncated(what));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub(crate) fn uvarint(&mut self, what: &'static str) -> Result<u64> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8(what)?;
            // The tenth byte may only carry the single remaining bit of a u64; anything
            // more is an overlong or overflowing encoding, never produced by the writer.
            if shift == 63 && b > 1 {
                return Err(Error::Corrupt("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    #[inline]
    pub(crate) fn ivarint(&mut self, what: &'static str) -> Result<i64> {
        self.uvarint(what).map(unzigzag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, 2, -2, i64::MAX, i64::MIN, 1 << 40, -(1 << 40)] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn uvarint_round_trips_and_len_matches() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX, 1 << 63, 300] {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            assert_eq!(out.len(), uvarint_len(v), "{v}");
            let mut r = Reader::new(&out);
            assert_eq!(r.uvarint("v").unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn overlong_varint_is_corrupt() {
        let bytes = [0xff; 11];
        assert!(matches!(
            Reader::new(&bytes).uvarint("v"),
            Err(Error::Corrupt(_))
        ));
        let bytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(matches!(
            Reader::new(&bytes).uvarint("v"),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn truncated_varint_is_truncated() {
        assert_eq!(
            Reader::new(&[0x80]).uvarint("v"),
            Err(Error::Truncated("v"))
        );
        assert_eq!(Reader::new(&[]).uvarint("v"), Err(Error::Truncated("v")));
    }
}
