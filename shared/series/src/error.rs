//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong building or reading a block.
///
/// Decoding never panics on hostile or damaged input: every inconsistency a reader can
/// notice surfaces as one of these variants instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// A row was pushed whose timestamp is not after the previous one; blocks are
    /// strictly ordered so that range lookups can binary-search and deltas stay positive.
    #[error("timestamp {got} is not after the previous timestamp {previous}")]
    NonIncreasingTimestamp { previous: i64, got: i64 },

    /// A row or a block has a different number of value columns than expected.
    #[error("expected {expected} value columns, got {got}")]
    ColumnCount { expected: usize, got: usize },

    /// A builder was asked for more columns than a block may hold.
    #[error("{0} columns exceed the limit of {max}", max = crate::MAX_COLUMNS)]
    TooManyColumns(usize),

    /// The block already holds [`crate::MAX_ROWS`] rows.
    #[error("the block is full ({max} rows)", max = crate::MAX_ROWS)]
    BlockFull,

    /// The input ended before the block did.
    #[error("block truncated while reading {0}")]
    Truncated(&'static str),

    /// The block was written by a newer (or unknown) format version.
    #[error("unsupported block format version {0}")]
    UnsupportedVersion(u8),

    /// A column announces an encoding this reader does not know.
    #[error("unknown column encoding {0:#04x}")]
    UnknownEncoding(u8),

    /// The bytes are structurally invalid (overlong varint, out-of-range header field,
    /// timestamps that do not match the header, trailing bytes, ...).
    #[error("corrupt block: {0}")]
    Corrupt(&'static str),

    /// A decoded value does not fit the typed field it belongs to (for example a CPU
    /// figure beyond `u32`), which means the block was written with another schema.
    #[error("value {value} of column {column} does not fit its field")]
    ValueOutOfRange { column: &'static str, value: i64 },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
