//! One column of a block: an adaptive integer codec.
//!
//! Statistics columns behave very differently from each other: memory sizes sit still
//! for hours, cumulative counters climb by noisy amounts with the odd burst or reset,
//! timestamps tick at a nearly fixed rate, and idle disks report the same counter for
//! most samples. No single encoding suits all of them, so each column is written in
//! whichever combination of a few simple encodings is smallest for its data, chosen per
//! block and named by one mode byte.
//!
//! Layout of one column holding `n >= 1` values:
//!
//! ```text
//! mode: u8                        transform | SCALED? | packing
//! first value: zigzag varint      omitted when the reader knows it (timestamps)
//! CONSTANT: nothing else          all n values equal the first
//! DELTA:    residuals are the n-1 differences v[i] - v[i-1]
//! DOD:      first difference (zigzag varint); residuals are the n-2 differences of
//!           consecutive differences (a steady rate becomes all zeros)
//! SCALED:   factor g >= 2 (uvarint); every residual is a multiple of g and is stored
//!           divided by it (byte counters move in whole pages, memory in 4 KiB)
//! VARINT:   each residual as zigzag varint
//! SPARSE:   bitmap, one bit per residual set when it is non-zero, then each non-zero
//!           residual as zigzag varint
//! PFOR:     patched frame of reference: reference m (zigzag varint), width b (u8),
//!           the low b bits of every (residual - m) packed LSB first, then the
//!           exceptions whose offset needs more bits: count (uvarint), and per
//!           exception the gap from the previous one (uvarint) and the offset's high
//!           bits, offset >> b (uvarint)
//! SPARSE_PFOR: the SPARSE bitmap, then the non-zero residuals packed as PFOR
//! ```
//!
//! PFOR is what keeps noisy counters cheap: the width fits the typical increment, and a
//! rare burst, collection gap or counter reset costs a couple of bytes on its own
//! instead of widening every value in the block.
//!
//! All arithmetic wraps, so any `i64` (and so any `u64` bit pattern) round-trips.

use crate::bits::{mask, packed_len, width_of, BitReader, BitWriter};
use crate::error::{Error, Result};
use crate::varint::{put_ivarint, put_uvarint, uvarint_len, zigzag, Reader};

const CONSTANT: u8 = 0x00;
const DELTA: u8 = 0x10;
const DOD: u8 = 0x20;
const SCALED: u8 = 0x08;
const VARINT: u8 = 0x00;
const PFOR: u8 = 0x01;
const SPARSE: u8 = 0x02;
const SPARSE_PFOR: u8 = 0x03;
const TRANSFORM_MASK: u8 = 0xf0;
const PACKING_MASK: u8 = 0x07;

/// Reusable buffers so that encoding a block allocates nothing per column.
#[derive(Default)]
pub(crate) struct Scratch {
    deltas: Vec<i64>,
    dods: Vec<i64>,
    select: Vec<i64>,
    nonzero: Vec<i64>,
}

/// How one residual sequence is packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Packing {
    Varint,
    Sparse,
    Pfor { reference: i64, width: u32 },
    SparsePfor { reference: i64, width: u32 },
}

impl Packing {
    fn code(self) -> u8 {
        match self {
            Packing::Varint => VARINT,
            Packing::Sparse => SPARSE,
            Packing::Pfor { .. } => PFOR,
            Packing::SparsePfor { .. } => SPARSE_PFOR,
        }
    }
}

/// Largest common factor of the values (1 when none helps). Factors beyond `i64::MAX`
/// are not used so that division and multiplication stay within `i64`.
fn common_factor(values: &[i64]) -> u64 {
    let mut g = 0u64;
    for &v in values {
        let v = v.unsigned_abs();
        if g != 0 && v % g == 0 {
            continue;
        }
        g = gcd(g, v);
        if g == 1 {
            return 1;
        }
    }
    if g < 2 || g > i64::MAX as u64 {
        1
    } else {
        g
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Divides every residual by its common factor, returning the factor (1: unchanged).
fn scale_down(values: &mut [i64]) -> u64 {
    let g = common_factor(values);
    if g > 1 {
        // Exact: every value is a multiple of g, and g <= i64::MAX.
        let g = g as i64;
        values.iter_mut().for_each(|v| *v /= g);
    }
    g
}

/// Bytes an exception with `extra` high bits costs, gap byte included (an estimate
/// for choosing the width; the exact size is computed afterwards).
fn exception_estimate(extra: u32) -> usize {
    1 + (extra as usize).div_ceil(7)
}

/// Exact encoded size of PFOR with the given reference and width.
fn pfor_size(residuals: &[i64], reference: i64, width: u32) -> usize {
    let mut exceptions = 0usize;
    let mut exception_bytes = 0usize;
    let mut last = 0usize;
    for (i, &r) in residuals.iter().enumerate() {
        let high = (r.wrapping_sub(reference) as u64)
            .checked_shr(width)
            .unwrap_or(0);
        if high != 0 {
            exceptions += 1;
            exception_bytes += uvarint_len((i - last) as u64) + uvarint_len(high);
            last = i + 1;
        }
    }
    uvarint_len(zigzag(reference))
        + 1
        + packed_len(residuals.len(), width)
        + uvarint_len(exceptions as u64)
        + exception_bytes
}

/// Best PFOR width for a reference, by estimated size. Only widths that some offset
/// actually has (and zero) are tried: between two of them the exceptions are the same
/// values and only the packed part grows, so little can be gained elsewhere, and this
/// keeps the search to a few dozen steps per column.
fn pfor_width(residuals: &[i64], reference: i64) -> (u32, usize) {
    let mut histogram = [0usize; 65];
    for &r in residuals {
        histogram[width_of(r.wrapping_sub(reference) as u64) as usize] += 1;
    }
    let mut present = [(0u32, 0usize); 65];
    let mut len = 0;
    for (w, &count) in (0u32..).zip(histogram.iter()) {
        if count != 0 {
            present[len] = (w, count);
            len += 1;
        }
    }
    let present = &present[..len];
    let mut best = (64, usize::MAX);
    for width in std::iter::once(0).chain(present.iter().map(|&(w, _)| w)) {
        let mut exceptions = 0;
        let mut exception_bytes = 0;
        for &(w, count) in present.iter().rev().take_while(|&&(w, _)| w > width) {
            exceptions += count;
            exception_bytes += count * exception_estimate(w - width);
        }
        let size =
            packed_len(residuals.len(), width) + uvarint_len(exceptions as u64) + exception_bytes;
        if size < best.1 {
            best = (width, size);
        }
    }
    best
}

/// The PFOR parameters for a residual sequence, with their exact size. Two references
/// are tried: the minimum, and a low percentile so that a few large negative outliers
/// (a counter reset, the step after a collection gap) become exceptions instead of
/// shifting every offset.
fn plan_pfor(residuals: &[i64], select: &mut Vec<i64>) -> (Packing, usize) {
    let min = residuals.iter().copied().min().unwrap_or(0);
    let mut references = [min, min];
    if residuals.len() >= 32 {
        select.clear();
        select.extend_from_slice(residuals);
        let k = residuals.len() / 32;
        references[1] = *select.select_nth_unstable(k).1;
    }
    let mut best: Option<(i64, u32, usize)> = None;
    for (i, &reference) in references.iter().enumerate() {
        if i == 1 && reference == min {
            break;
        }
        let (width, estimate) = pfor_width(residuals, reference);
        let estimate = estimate + uvarint_len(zigzag(reference));
        if best.is_none_or(|b| estimate < b.2) {
            best = Some((reference, width, estimate));
        }
    }
    let (reference, width, _) = best.unwrap_or((0, 0, 0));
    (
        Packing::Pfor { reference, width },
        pfor_size(residuals, reference, width),
    )
}

/// The smallest packing of a residual sequence and its size (ties favour the simpler).
fn plan(residuals: &[i64], select: &mut Vec<i64>, nonzero: &mut Vec<i64>) -> (Packing, usize) {
    let mut varint_bytes = 0usize;
    nonzero.clear();
    for &r in residuals {
        varint_bytes += uvarint_len(zigzag(r));
        if r != 0 {
            nonzero.push(r);
        }
    }
    let mut best = (Packing::Varint, varint_bytes);
    if residuals.is_empty() {
        return best;
    }
    let bitmap = residuals.len().div_ceil(8);
    // A zero residual costs exactly one varint byte, which the bitmap bit replaces.
    let zeros = residuals.len() - nonzero.len();
    let sparse = bitmap + varint_bytes - zeros;
    if sparse < best.1 {
        best = (Packing::Sparse, sparse);
    }
    let pfor = plan_pfor(residuals, select);
    if pfor.1 < best.1 {
        best = pfor;
    }
    // Zero-inflated data (idle disks, memory that moves in some minutes only): the
    // bitmap takes the zeros and PFOR packs the rest tightly.
    if zeros > 0 && !nonzero.is_empty() {
        if let (Packing::Pfor { reference, width }, size) = plan_pfor(nonzero, select) {
            if bitmap + size < best.1 {
                best = (Packing::SparsePfor { reference, width }, bitmap + size);
            }
        }
    }
    best
}

fn write_bitmap(out: &mut Vec<u8>, residuals: &[i64]) {
    let start = out.len();
    out.resize(start + residuals.len().div_ceil(8), 0);
    for (i, &r) in residuals.iter().enumerate() {
        if r != 0 {
            out[start + i / 8] |= 1 << (i % 8);
        }
    }
}

fn write_packed(out: &mut Vec<u8>, residuals: &[i64], packing: Packing) {
    match packing {
        Packing::Varint => {
            for &r in residuals {
                put_ivarint(out, r);
            }
        }
        Packing::Sparse => {
            write_bitmap(out, residuals);
            for &r in residuals.iter().filter(|&&r| r != 0) {
                put_ivarint(out, r);
            }
        }
        Packing::SparsePfor { reference, width } => {
            write_bitmap(out, residuals);
            let nonzero: Vec<i64> = residuals.iter().copied().filter(|&r| r != 0).collect();
            write_packed(out, &nonzero, Packing::Pfor { reference, width });
        }
        Packing::Pfor { reference, width } => {
            put_ivarint(out, reference);
            // Widths are at most 64.
            out.push(width.to_le_bytes()[0]);
            let mut w = BitWriter::new(out);
            let mut exceptions = 0u64;
            for &r in residuals {
                let offset = r.wrapping_sub(reference) as u64;
                w.put(offset, width);
                exceptions += u64::from(offset.checked_shr(width).unwrap_or(0) != 0);
            }
            w.finish();
            put_uvarint(out, exceptions);
            let mut last = 0usize;
            for (i, &r) in residuals.iter().enumerate() {
                let high = (r.wrapping_sub(reference) as u64)
                    .checked_shr(width)
                    .unwrap_or(0);
                if high != 0 {
                    put_uvarint(out, (i - last) as u64);
                    put_uvarint(out, high);
                    last = i + 1;
                }
            }
        }
    }
}

/// Appends the encoding of `values` (at least one) to `out`. With `first_known` the
/// first value is left out because the block header already carries it.
pub(crate) fn encode(values: &[i64], first_known: bool, s: &mut Scratch, out: &mut Vec<u8>) {
    let Some(&first) = values.first() else {
        return;
    };
    let put_first = |out: &mut Vec<u8>| {
        if !first_known {
            put_ivarint(out, first);
        }
    };
    if values.iter().all(|&v| v == first) {
        out.push(CONSTANT);
        put_first(out);
        return;
    }

    s.deltas.clear();
    s.deltas
        .extend(values.windows(2).map(|w| w[1].wrapping_sub(w[0])));
    s.dods.clear();
    s.dods
        .extend(s.deltas.windows(2).map(|w| w[1].wrapping_sub(w[0])));
    let first_delta = s.deltas[0];

    let delta_factor = scale_down(&mut s.deltas);
    let dod_factor = scale_down(&mut s.dods);
    let factor_len = |g: u64| if g > 1 { uvarint_len(g) } else { 0 };
    let (by_delta, delta_size) = plan(&s.deltas, &mut s.select, &mut s.nonzero);
    let (by_dod, dod_size) = plan(&s.dods, &mut s.select, &mut s.nonzero);
    let delta_size = delta_size + factor_len(delta_factor);
    let dod_size = dod_size + factor_len(dod_factor) + uvarint_len(zigzag(first_delta));

    let (transform, factor, packing, residuals) = if dod_size < delta_size {
        (DOD, dod_factor, by_dod, &s.dods)
    } else {
        (DELTA, delta_factor, by_delta, &s.deltas)
    };
    let scaled = if factor > 1 { SCALED } else { 0 };
    out.push(transform | scaled | packing.code());
    put_first(out);
    if transform == DOD {
        put_ivarint(out, first_delta);
    }
    if factor > 1 {
        put_uvarint(out, factor);
    }
    write_packed(out, residuals, packing);
}

/// Reads `n` residuals of the given packing into `dst` (cleared first).
fn read_packed(r: &mut Reader<'_>, packing: u8, n: usize, dst: &mut Vec<i64>) -> Result<()> {
    dst.clear();
    match packing {
        VARINT => {
            for _ in 0..n {
                dst.push(r.ivarint("varint residual")?);
            }
        }
        SPARSE | SPARSE_PFOR => {
            let bitmap = r.take(n.div_ceil(8), "sparse bitmap")?;
            let is_set = |i: usize| bitmap[i / 8] & (1 << (i % 8)) != 0;
            let set = (0..n).filter(|&i| is_set(i)).count();
            if packing == SPARSE {
                for _ in 0..set {
                    dst.push(r.ivarint("sparse residual")?);
                }
            } else {
                read_packed(r, PFOR, set, dst)?;
            }
            if dst.contains(&0) {
                return Err(Error::Corrupt("sparse residual marked non-zero is zero"));
            }
            // Spread the non-zero values to their positions, back to front so that
            // none is overwritten before it has moved (position >= its index).
            dst.resize(n, 0);
            let mut next = set;
            for i in (0..n).rev() {
                if is_set(i) {
                    next -= 1;
                    dst[i] = dst[next];
                } else {
                    dst[i] = 0;
                }
            }
        }
        PFOR => {
            let reference = r.ivarint("frame reference")?;
            let width = u32::from(r.u8("frame width")?);
            if width > 64 {
                return Err(Error::Corrupt("bit width above 64"));
            }
            let bytes = r.take(packed_len(n, width), "packed residuals")?;
            // Offsets are held as i64 bit patterns until the exceptions are patched in.
            let mut bits = BitReader::new(bytes);
            dst.extend((0..n).map(|_| bits.get(width) as i64));
            let exceptions = r.uvarint("exception count")?;
            if exceptions > n as u64 {
                return Err(Error::Corrupt("more exceptions than residuals"));
            }
            let mut next = 0u64;
            for _ in 0..exceptions {
                let at = next
                    .checked_add(r.uvarint("exception gap")?)
                    .filter(|&at| at < n as u64)
                    .ok_or(Error::Corrupt("exception position out of range"))?;
                let high = r.uvarint("exception value")?;
                // The writer only records high bits that exist and are non-zero.
                if high == 0 || width == 64 || high & !mask(64 - width) != 0 {
                    return Err(Error::Corrupt("exception value out of range"));
                }
                let slot = usize::try_from(at).map_err(|_| Error::Corrupt("exception position"))?;
                dst[slot] |= (high << width) as i64;
                next = at + 1;
            }
            dst.iter_mut().for_each(|o| *o = reference.wrapping_add(*o));
        }
        other => return Err(Error::UnknownEncoding(other)),
    }
    Ok(())
}

/// Decodes a column of `n >= 1` values into `dst` (cleared first). `known_first` is
/// the first value when the writer left it out.
pub(crate) fn decode(
    r: &mut Reader<'_>,
    n: usize,
    known_first: Option<i64>,
    s: &mut Scratch,
    dst: &mut Vec<i64>,
) -> Result<()> {
    dst.clear();
    if n == 0 {
        return Ok(());
    }
    let mode = r.u8("column mode")?;
    let (transform, packing) = (mode & TRANSFORM_MASK, mode & PACKING_MASK);
    let known_mode = match transform {
        CONSTANT => mode == CONSTANT,
        DELTA | DOD => packing <= SPARSE_PFOR,
        _ => false,
    };
    if !known_mode {
        return Err(Error::UnknownEncoding(mode));
    }
    let first = match known_first {
        Some(v) => v,
        None => r.ivarint("first value")?,
    };
    dst.push(first);
    if transform == CONSTANT {
        dst.resize(n, first);
        return Ok(());
    }
    if transform == DOD && n < 2 {
        return Err(Error::Corrupt("delta-of-delta column with one value"));
    }
    let first_delta = if transform == DOD {
        r.ivarint("first delta")?
    } else {
        0
    };
    let factor = if mode & SCALED != 0 {
        let g = r.uvarint("scale factor")?;
        if g < 2 || g > i64::MAX as u64 {
            return Err(Error::Corrupt("scale factor out of range"));
        }
        g as i64
    } else {
        1
    };
    if transform == DELTA {
        read_packed(r, packing, n - 1, &mut s.deltas)?;
        let mut v = first;
        for &d in &s.deltas {
            v = v.wrapping_add(d.wrapping_mul(factor));
            dst.push(v);
        }
    } else {
        read_packed(r, packing, n - 2, &mut s.dods)?;
        let mut d = first_delta;
        let mut v = first.wrapping_add(d);
        dst.push(v);
        for &dd in &s.dods {
            d = d.wrapping_add(dd.wrapping_mul(factor));
            v = v.wrapping_add(d);
            dst.push(v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(values: &[i64], first_known: bool) -> (Vec<u8>, Vec<i64>) {
        let mut s = Scratch::default();
        let mut out = Vec::new();
        encode(values, first_known, &mut s, &mut out);
        let mut r = Reader::new(&out);
        let mut dst = Vec::new();
        let known = first_known.then(|| values[0]);
        decode(&mut r, values.len(), known, &mut s, &mut dst).unwrap();
        assert_eq!(r.remaining(), 0);
        (out, dst)
    }

    #[test]
    fn constant_column_costs_one_byte_plus_value() {
        let values = vec![8_388_608; 720];
        let (bytes, back) = round_trip(&values, false);
        assert_eq!(back, values);
        assert_eq!(bytes.len(), 1 + uvarint_len(zigzag(8_388_608)));
    }

    #[test]
    fn regular_timestamps_pack_to_almost_nothing() {
        let values: Vec<i64> = (0..720).map(|i| 1_700_000_000_000 + i * 60_000).collect();
        let (bytes, back) = round_trip(&values, true);
        assert_eq!(back, values);
        // mode + first delta + PFOR header with width 0 and no exceptions.
        assert!(bytes.len() <= 8, "{}", bytes.len());
    }

    #[test]
    fn jittered_timestamps_stay_small() {
        let jitter = [3, -2, 0, 4, -4, 1, 2, -1];
        let values: Vec<i64> = (0..720)
            .map(|i| 1_700_000_000_000 + i * 60_000 + jitter[usize::try_from(i % 8).unwrap()])
            .collect();
        let (bytes, back) = round_trip(&values, true);
        assert_eq!(back, values);
        assert!(bytes.len() < 720, "{}", bytes.len());
    }

    #[test]
    fn rare_change_costs_a_few_bytes() {
        let mut values = vec![1_000_000i64; 720];
        for v in &mut values[300..] {
            *v += 4096;
        }
        let (bytes, back) = round_trip(&values, false);
        assert_eq!(back, values);
        assert_eq!(bytes[0], DELTA | SCALED | PFOR);
        assert!(bytes.len() < 16, "{}", bytes.len());
    }

    #[test]
    fn page_multiples_are_scaled() {
        let values: Vec<i64> = (0..100).map(|i| (i * i % 37) * 4096).collect();
        let (bytes, back) = round_trip(&values, false);
        assert_eq!(back, values);
        assert_eq!(bytes[0] & SCALED, SCALED);
    }

    #[test]
    fn counter_reset_and_burst_are_exceptions() {
        // A counter growing by 0..1000 per step, a burst, then a reset to near zero.
        let mut v = 5_000_000_000i64;
        let mut values = Vec::new();
        for i in 0..720i64 {
            v += (i * 7919) % 1000;
            if i == 200 {
                v += 1 << 30;
            }
            if i == 500 {
                v = 17;
            }
            values.push(v);
        }
        let (bytes, back) = round_trip(&values, false);
        assert_eq!(back, values);
        assert_eq!(bytes[0] & PACKING_MASK, PFOR);
        // 10 bits per value plus a handful of bytes for the two outliers.
        assert!(bytes.len() < 720 * 10 / 8 + 40, "{}", bytes.len());
    }

    #[test]
    fn every_packing_round_trips() {
        let residuals = vec![0, 5, -3, 0, 0, i64::MIN, i64::MAX, 1 << 40, 0, -1];
        let packings = [
            Packing::Varint,
            Packing::Sparse,
            Packing::Pfor {
                reference: -3,
                width: 3,
            },
            Packing::Pfor {
                reference: 0,
                width: 0,
            },
            Packing::Pfor {
                reference: i64::MIN,
                width: 64,
            },
            Packing::Pfor {
                reference: 7,
                width: 63,
            },
            Packing::SparsePfor {
                reference: -3,
                width: 2,
            },
        ];
        for packing in packings {
            let mut out = Vec::new();
            write_packed(&mut out, &residuals, packing);
            if let Packing::Pfor { reference, width } = packing {
                assert_eq!(
                    out.len(),
                    pfor_size(&residuals, reference, width),
                    "{packing:?}"
                );
            }
            let mut r = Reader::new(&out);
            let mut back = Vec::new();
            read_packed(&mut r, packing.code(), residuals.len(), &mut back).unwrap();
            assert_eq!(back, residuals, "{packing:?}");
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn common_factors() {
        assert_eq!(common_factor(&[4096, -8192, 0, 12288]), 4096);
        assert_eq!(common_factor(&[0, 0]), 1);
        assert_eq!(common_factor(&[3, 4]), 1);
        assert_eq!(common_factor(&[i64::MIN]), 1);
        assert_eq!(common_factor(&[i64::MIN, 1 << 62]), 1 << 62);
    }

    #[test]
    fn extremes_wrap_losslessly() {
        let values = vec![i64::MIN, i64::MAX, 0, i64::MIN, -1, i64::MAX, 1];
        assert_eq!(round_trip(&values, false).1, values);
        let values = vec![u64::MAX as i64, 0, (u64::MAX - 1) as i64];
        assert_eq!(round_trip(&values, false).1, values);
    }

    #[test]
    fn single_value_and_pairs() {
        assert_eq!(round_trip(&[42], false).1, vec![42]);
        assert_eq!(round_trip(&[42, 7], false).1, vec![42, 7]);
        assert_eq!(round_trip(&[5, 7], true).1, vec![5, 7]);
    }

    #[test]
    fn unknown_mode_is_an_error() {
        let mut s = Scratch::default();
        let mut dst = Vec::new();
        for mode in [0x03u8, 0x14, 0x30, 0xff, 0x01, 0x27] {
            let bytes = [mode, 0, 0, 0, 0];
            let err = decode(&mut Reader::new(&bytes), 3, None, &mut s, &mut dst).unwrap_err();
            assert_eq!(err, Error::UnknownEncoding(mode));
        }
    }

    #[test]
    fn bad_width_is_corrupt() {
        let mut s = Scratch::default();
        let mut dst = Vec::new();
        let bytes = [DELTA | PFOR, 0, 0, 65, 0, 0];
        let err = decode(&mut Reader::new(&bytes), 2, None, &mut s, &mut dst).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)));
        // An exception beyond the last residual, and one with no high bits.
        for bytes in [
            [DELTA | PFOR, 0, 0, 1, 0, 1, 1, 1],
            [DELTA | PFOR, 0, 0, 1, 0, 1, 0, 0],
        ] {
            let err = decode(&mut Reader::new(&bytes), 2, None, &mut s, &mut dst).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
        }
        // A scale factor below two.
        let bytes = [DELTA | SCALED, 0, 1, 0];
        let err = decode(&mut Reader::new(&bytes), 2, None, &mut s, &mut dst).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)));
    }
}
