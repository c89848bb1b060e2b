//! Blocks: up to [`MAX_ROWS`] timestamped rows of one series with a fixed number of
//! integer value columns, stored column by column.
//!
//! Layout (format version 1):
//!
//! ```text
//! version: u8 = 1
//! rows: uvarint
//! columns: uvarint                 value columns, timestamps not counted
//! first_ts: zigzag varint          only when rows > 0
//! span: uvarint                    last_ts - first_ts, only when rows > 0
//! timestamp column                 first value left out (it is first_ts)
//! value column 0 .. columns-1      see `column.rs`
//! ```
//!
//! The header comes first and carries the time range so that a store can index blocks
//! by time, or skip them, without decoding any column.

use crate::column::{self, Scratch};
use crate::error::{Error, Result};
use crate::schema::Schema;
use crate::varint::{put_ivarint, put_uvarint, Reader};

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Most rows one block may hold. Bounded so that a damaged header cannot make a reader
/// allocate without limit: `MAX_ROWS * (MAX_COLUMNS + 1)` values is at most ~34 MB.
pub const MAX_ROWS: usize = 65_536;

/// Most value columns one block may hold (the VM schema uses 15).
pub const MAX_COLUMNS: usize = 64;

/// What a block's header says, readable without decoding the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub version: u8,
    pub rows: usize,
    pub columns: usize,
    /// First and last timestamp; `None` for a block without rows.
    pub time_range: Option<(i64, i64)>,
}

impl BlockHeader {
    /// Whether any row of the block may fall in `[from_ts, to_ts)`.
    pub fn overlaps(&self, from_ts: i64, to_ts: i64) -> bool {
        from_ts < to_ts
            && self
                .time_range
                .is_some_and(|(first, last)| first < to_ts && last >= from_ts)
    }
}

/// Reads and checks the header of a block.
pub fn read_header(bytes: &[u8]) -> Result<BlockHeader> {
    parse_header(&mut Reader::new(bytes))
}

fn parse_header(r: &mut Reader<'_>) -> Result<BlockHeader> {
    let version = r.u8("version")?;
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    let rows = r.uvarint("row count")?;
    if rows > MAX_ROWS as u64 {
        return Err(Error::Corrupt("row count above the limit"));
    }
    let columns = r.uvarint("column count")?;
    if columns > MAX_COLUMNS as u64 {
        return Err(Error::Corrupt("column count above the limit"));
    }
    let rows = usize::try_from(rows).map_err(|_| Error::Corrupt("row count above the limit"))?;
    let time_range = if rows == 0 {
        None
    } else {
        let first = r.ivarint("first timestamp")?;
        let span = r.uvarint("time span")?;
        let last = first.wrapping_add(span as i64);
        // Strictly increasing timestamps need at least one millisecond per step, and the
        // last one must not wrap past i64::MAX.
        if last < first || span < rows as u64 - 1 {
            return Err(Error::Corrupt("time span inconsistent with row count"));
        }
        Some((first, last))
    };
    Ok(BlockHeader {
        version,
        rows,
        columns: usize::try_from(columns)
            .map_err(|_| Error::Corrupt("column count above the limit"))?,
        time_range,
    })
}

/// Collects rows of one series and encodes them as a block.
///
/// Rows are kept column by column while they are pushed, which is the order the codec
/// needs them in, so `finish` does no transposition.
#[derive(Default)]
pub struct BlockBuilder {
    timestamps: Vec<i64>,
    columns: Vec<Vec<i64>>,
    scratch_row: Vec<i64>,
    scratch: Scratch,
}

impl BlockBuilder {
    /// A builder for rows of `columns` values each (timestamps not counted).
    pub fn new(columns: usize) -> Result<Self> {
        Self::with_capacity(columns, 0)
    }

    /// As [`BlockBuilder::new`], with room for `rows` rows before reallocating.
    pub fn with_capacity(columns: usize, rows: usize) -> Result<Self> {
        if columns > MAX_COLUMNS {
            return Err(Error::TooManyColumns(columns));
        }
        let rows = rows.min(MAX_ROWS);
        Ok(Self {
            timestamps: Vec::with_capacity(rows),
            columns: (0..columns).map(|_| Vec::with_capacity(rows)).collect(),
            scratch_row: Vec::new(),
            scratch: Scratch::default(),
        })
    }

    /// A builder for samples of schema `S`.
    pub fn for_schema<S: Schema>() -> Result<Self> {
        Self::new(S::COLUMN_NAMES.len())
    }

    /// Number of value columns per row.
    pub fn columns(&self) -> usize {
        self.columns.len()
    }

    /// Rows pushed so far.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Timestamp of the last row pushed.
    pub fn last_ts(&self) -> Option<i64> {
        self.timestamps.last().copied()
    }

    /// Timestamp of the first row pushed.
    pub fn first_ts(&self) -> Option<i64> {
        self.timestamps.first().copied()
    }

    /// Appends one row. `ts` must be after the previous row's; unsigned values are
    /// stored by casting them to `i64` (`v as i64`) and read back with `as u64`, which
    /// is lossless.
    pub fn push(&mut self, ts: i64, values: &[i64]) -> Result<()> {
        if values.len() != self.columns.len() {
            return Err(Error::ColumnCount {
                expected: self.columns.len(),
                got: values.len(),
            });
        }
        if let Some(previous) = self.last_ts() {
            if ts <= previous {
                return Err(Error::NonIncreasingTimestamp { previous, got: ts });
            }
        }
        if self.timestamps.len() >= MAX_ROWS {
            return Err(Error::BlockFull);
        }
        self.timestamps.push(ts);
        for (column, &v) in self.columns.iter_mut().zip(values) {
            column.push(v);
        }
        Ok(())
    }

    /// Appends one typed sample.
    pub fn push_sample<S: Schema>(&mut self, sample: &S) -> Result<()> {
        let mut row = std::mem::take(&mut self.scratch_row);
        row.clear();
        row.resize(S::COLUMN_NAMES.len(), 0);
        sample.write_columns(&mut row);
        let pushed = self.push(sample.ts(), &row);
        self.scratch_row = row;
        pushed
    }

    /// Encodes the rows pushed so far.
    pub fn finish(mut self) -> Vec<u8> {
        self.encode()
    }

    /// Encodes the rows pushed so far and empties the builder, keeping its buffers for
    /// the next block of the same series.
    pub fn flush(&mut self) -> Vec<u8> {
        let out = self.encode();
        self.timestamps.clear();
        self.columns.iter_mut().for_each(Vec::clear);
        out
    }

    fn encode(&mut self) -> Vec<u8> {
        let rows = self.timestamps.len();
        // A rough guess (two bytes per value) that avoids most regrowth.
        let mut out = Vec::with_capacity(16 + rows * (self.columns.len() + 1) * 2);
        out.push(FORMAT_VERSION);
        put_uvarint(&mut out, rows as u64);
        put_uvarint(&mut out, self.columns.len() as u64);
        if let (Some(&first), Some(&last)) = (self.timestamps.first(), self.timestamps.last()) {
            put_ivarint(&mut out, first);
            put_uvarint(&mut out, last.wrapping_sub(first) as u64);
            column::encode(&self.timestamps, true, &mut self.scratch, &mut out);
            for values in &self.columns {
                column::encode(values, false, &mut self.scratch, &mut out);
            }
        }
        out
    }
}

/// One row of a decoded block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    pub ts: i64,
    pub values: &'a [i64],
}

/// A decoded block, rows in timestamp order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecodedBlock {
    columns: usize,
    timestamps: Vec<i64>,
    // Row-major, `columns` values per row, so a row is one slice.
    values: Vec<i64>,
}

impl DecodedBlock {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Number of value columns per row.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// All timestamps, increasing.
    pub fn timestamps(&self) -> &[i64] {
        &self.timestamps
    }

    /// Row `i`, if there is one.
    pub fn row(&self, i: usize) -> Option<Row<'_>> {
        let ts = *self.timestamps.get(i)?;
        let values = &self.values[i * self.columns..(i + 1) * self.columns];
        Some(Row { ts, values })
    }

    /// The rows in order.
    pub fn iter(&self) -> Rows<'_> {
        Rows {
            block: self,
            next: 0,
        }
    }

    /// The values of column `c` (empty when there is no such column).
    pub fn column(&self, c: usize) -> impl ExactSizeIterator<Item = i64> + '_ {
        let rows = if c < self.columns { self.len() } else { 0 };
        (0..rows).map(move |i| self.values[i * self.columns + c])
    }

    /// Decodes the rows into typed samples.
    pub fn samples<S: Schema>(&self) -> Result<Vec<S>> {
        check_schema::<S>(self.columns)?;
        self.iter().map(S::from_row).collect()
    }

    /// Keeps only rows `start..end`.
    fn retain_rows(&mut self, start: usize, end: usize) {
        self.timestamps.truncate(end);
        self.timestamps.drain(..start);
        self.values.truncate(end * self.columns);
        self.values.drain(..start * self.columns);
    }
}

/// Iterator over the rows of a [`DecodedBlock`].
pub struct Rows<'a> {
    block: &'a DecodedBlock,
    next: usize,
}

impl<'a> Iterator for Rows<'a> {
    type Item = Row<'a>;

    fn next(&mut self) -> Option<Row<'a>> {
        let row = self.block.row(self.next)?;
        self.next += 1;
        Some(row)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.block.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Rows<'_> {}

impl<'a> IntoIterator for &'a DecodedBlock {
    type Item = Row<'a>;
    type IntoIter = Rows<'a>;

    fn into_iter(self) -> Rows<'a> {
        self.iter()
    }
}

/// Decodes a whole block.
pub fn decode(bytes: &[u8]) -> Result<DecodedBlock> {
    let mut r = Reader::new(bytes);
    let header = parse_header(&mut r)?;
    decode_body(&mut r, &header)
}

/// Decodes the rows with `from_ts <= ts < to_ts`. A block that lies wholly outside
/// the range is answered from its header alone, without reading its columns.
pub fn decode_range(bytes: &[u8], from_ts: i64, to_ts: i64) -> Result<DecodedBlock> {
    let mut r = Reader::new(bytes);
    let header = parse_header(&mut r)?;
    if !header.overlaps(from_ts, to_ts) {
        return Ok(DecodedBlock {
            columns: header.columns,
            ..DecodedBlock::default()
        });
    }
    let mut block = decode_body(&mut r, &header)?;
    let start = block.timestamps.partition_point(|&ts| ts < from_ts);
    let end = block
        .timestamps
        .partition_point(|&ts| ts < to_ts)
        .max(start);
    block.retain_rows(start, end);
    Ok(block)
}

/// Decodes a block of typed samples.
pub fn decode_samples<S: Schema>(bytes: &[u8]) -> Result<Vec<S>> {
    check_schema::<S>(read_header(bytes)?.columns)?;
    decode(bytes)?.samples()
}

/// Decodes the typed samples with `from_ts <= ts < to_ts`.
pub fn decode_samples_range<S: Schema>(bytes: &[u8], from_ts: i64, to_ts: i64) -> Result<Vec<S>> {
    check_schema::<S>(read_header(bytes)?.columns)?;
    decode_range(bytes, from_ts, to_ts)?.samples()
}

/// Encodes typed samples (in increasing timestamp order) as one block.
pub fn encode_samples<S: Schema>(samples: &[S]) -> Result<Vec<u8>> {
    let mut builder = BlockBuilder::with_capacity(S::COLUMN_NAMES.len(), samples.len())?;
    for sample in samples {
        builder.push_sample(sample)?;
    }
    Ok(builder.finish())
}

fn check_schema<S: Schema>(columns: usize) -> Result<()> {
    let expected = S::COLUMN_NAMES.len();
    if columns != expected {
        return Err(Error::ColumnCount {
            expected,
            got: columns,
        });
    }
    Ok(())
}

fn decode_body(r: &mut Reader<'_>, header: &BlockHeader) -> Result<DecodedBlock> {
    let rows = header.rows;
    let columns = header.columns;
    let mut block = DecodedBlock {
        columns,
        ..DecodedBlock::default()
    };
    if let Some((first, last)) = header.time_range {
        let mut scratch = Scratch::default();
        column::decode(r, rows, Some(first), &mut scratch, &mut block.timestamps)?;
        // The header's range is what stores index by, so it must agree with the rows.
        if block.timestamps.windows(2).any(|w| w[1] <= w[0]) {
            return Err(Error::Corrupt("timestamps not strictly increasing"));
        }
        if block.timestamps.last() != Some(&last) {
            return Err(Error::Corrupt("last timestamp differs from the header"));
        }
        block.values = vec![0; rows * columns];
        let mut column_values = Vec::with_capacity(rows);
        for c in 0..columns {
            column::decode(r, rows, None, &mut scratch, &mut column_values)?;
            for (row, &v) in column_values.iter().enumerate() {
                block.values[row * columns + c] = v;
            }
        }
    }
    if r.remaining() != 0 {
        return Err(Error::Corrupt("trailing bytes after the last column"));
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_block() -> (Vec<i64>, Vec<Vec<i64>>, Vec<u8>) {
        let mut b = BlockBuilder::new(3).unwrap();
        let mut ts = Vec::new();
        let mut rows = Vec::new();
        for i in 0..100i64 {
            let t = 1_000_000 + i * 60_000 + (i % 3);
            let row = vec![i * 7 % 13, 4096, 1_000_000 + i * i * 10];
            b.push(t, &row).unwrap();
            ts.push(t);
            rows.push(row);
        }
        (ts, rows, b.finish())
    }

    #[test]
    fn round_trip_and_header() {
        let (ts, rows, bytes) = sample_block();
        let h = read_header(&bytes).unwrap();
        assert_eq!(h.rows, 100);
        assert_eq!(h.columns, 3);
        assert_eq!(h.time_range, Some((ts[0], ts[99])));
        let block = decode(&bytes).unwrap();
        assert_eq!(block.timestamps(), &ts[..]);
        for (row, expected) in block.iter().zip(&rows) {
            assert_eq!(row.values, &expected[..]);
        }
        assert_eq!(block.column(1).collect::<Vec<_>>(), vec![4096; 100]);
        assert_eq!(block.column(3).count(), 0);
    }

    #[test]
    fn empty_block() {
        let bytes = BlockBuilder::new(2).unwrap().finish();
        let h = read_header(&bytes).unwrap();
        assert_eq!((h.rows, h.columns, h.time_range), (0, 2, None));
        let block = decode(&bytes).unwrap();
        assert!(block.is_empty());
        assert_eq!(block.columns(), 2);
        assert!(decode_range(&bytes, i64::MIN, i64::MAX).unwrap().is_empty());
    }

    #[test]
    fn push_rejects_bad_rows() {
        let mut b = BlockBuilder::new(2).unwrap();
        b.push(10, &[1, 2]).unwrap();
        assert_eq!(
            b.push(10, &[1, 2]),
            Err(Error::NonIncreasingTimestamp {
                previous: 10,
                got: 10
            })
        );
        assert_eq!(
            b.push(9, &[1, 2]),
            Err(Error::NonIncreasingTimestamp {
                previous: 10,
                got: 9
            })
        );
        assert_eq!(
            b.push(11, &[1]),
            Err(Error::ColumnCount {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(b.len(), 1);
        assert!(matches!(
            BlockBuilder::new(MAX_COLUMNS + 1),
            Err(Error::TooManyColumns(_))
        ));
    }

    #[test]
    fn block_full() {
        let mut b = BlockBuilder::new(0).unwrap();
        for ts in 0..MAX_ROWS as i64 {
            b.push(ts, &[]).unwrap();
        }
        assert_eq!(b.push(MAX_ROWS as i64, &[]), Err(Error::BlockFull));
        let block = decode(&b.finish()).unwrap();
        assert_eq!(block.len(), MAX_ROWS);
    }

    #[test]
    fn flush_reuses_the_builder() {
        let mut b = BlockBuilder::new(1).unwrap();
        b.push(1, &[5]).unwrap();
        let first = b.flush();
        assert!(b.is_empty());
        b.push(0, &[6]).unwrap();
        let second = b.flush();
        assert_eq!(decode(&first).unwrap().row(0).unwrap().values, &[5]);
        assert_eq!(decode(&second).unwrap().row(0).unwrap().ts, 0);
    }

    #[test]
    fn range_decoding() {
        let (ts, _, bytes) = sample_block();
        let block = decode_range(&bytes, ts[10], ts[20]).unwrap();
        assert_eq!(block.timestamps(), &ts[10..20]);
        assert_eq!(
            block.row(0).unwrap().values,
            decode(&bytes).unwrap().row(10).unwrap().values
        );
        // Bounds between samples.
        let block = decode_range(&bytes, ts[10] + 1, ts[20] + 1).unwrap();
        assert_eq!(block.timestamps(), &ts[11..21]);
        // Outside, empty and inverted ranges.
        assert!(decode_range(&bytes, 0, ts[0]).unwrap().is_empty());
        assert!(decode_range(&bytes, ts[99] + 1, i64::MAX)
            .unwrap()
            .is_empty());
        assert!(decode_range(&bytes, ts[50], ts[50]).unwrap().is_empty());
        assert!(decode_range(&bytes, ts[60], ts[50]).unwrap().is_empty());
        assert_eq!(decode_range(&bytes, i64::MIN, i64::MAX).unwrap().len(), 100);
        // A range outside the block does not look at the (here damaged) body.
        let mut damaged = bytes.clone();
        damaged.truncate(damaged.len() - 3);
        assert!(decode_range(&damaged, 0, 1).unwrap().is_empty());
        assert!(decode_range(&damaged, ts[0], ts[1]).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (_, _, bytes) = sample_block();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn header_errors() {
        assert_eq!(decode(&[]), Err(Error::Truncated("version")));
        assert_eq!(decode(&[2, 0, 0]), Err(Error::UnsupportedVersion(2)));
        // Too many rows / columns.
        assert!(matches!(
            decode(&[1, 0xff, 0xff, 0x7f, 0]),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(decode(&[1, 0, 65]), Err(Error::Corrupt(_))));
        // Three rows cannot span one millisecond.
        assert!(matches!(decode(&[1, 3, 0, 0, 1]), Err(Error::Corrupt(_))));
        // Trailing bytes.
        let mut bytes = BlockBuilder::new(0).unwrap().finish();
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(Error::Corrupt(_))));
    }

    #[test]
    fn header_must_match_timestamps() {
        let mut b = BlockBuilder::new(0).unwrap();
        b.push(0, &[]).unwrap();
        b.push(10, &[]).unwrap();
        let mut bytes = b.finish();
        // Header: version, rows, columns, first_ts, span; bump the span.
        assert_eq!(bytes[4], 10);
        bytes[4] = 11;
        assert!(matches!(decode(&bytes), Err(Error::Corrupt(_))));
    }
}
