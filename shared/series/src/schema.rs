//! Typed samples and their mapping to block columns.
//!
//! Blocks only know integers. A [`Schema`] fixes which field goes in which column so
//! that instance and volume statistics can be written and read back as structs. Column
//! order is part of the stored format: append new columns, never reorder.

use crate::block::Row;
use crate::error::{Error, Result};

/// A record type stored as one block row.
pub trait Schema: Sized {
    /// One name per value column, in storage order (timestamps not included).
    const COLUMN_NAMES: &'static [&'static str];

    /// The sample's timestamp (unix milliseconds).
    fn ts(&self) -> i64;

    /// Writes the value columns; `out` has exactly `COLUMN_NAMES.len()` entries.
    fn write_columns(&self, out: &mut [i64]);

    /// Rebuilds a sample from a row with `COLUMN_NAMES.len()` values.
    fn from_row(row: Row<'_>) -> Result<Self>;
}

/// Cumulative network counters, summed over an instance's NICs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// Cumulative block I/O counters (one volume, or summed over an instance's volumes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

/// Memory figures of an instance, in KiB as the hypervisor reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub actual_kib: u64,
    pub unused_kib: u64,
    pub rss_kib: u64,
    pub target_kib: u64,
}

/// One instance's statistics at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmSample {
    /// Unix milliseconds.
    pub ts: i64,
    /// CPU used, in hundredths of a percent (0..=10_000 for 0..=100 %). An integer so
    /// that the stored value is exact and delta-encodes well.
    pub cpu_hundredths: u32,
    pub vcpus: u32,
    pub memory: MemoryStats,
    pub network: NetCounters,
    pub disk: IoCounters,
}

impl VmSample {
    /// CPU used as a percentage.
    pub fn cpu_percent(&self) -> f64 {
        f64::from(self.cpu_hundredths) / 100.0
    }

    /// Sets the CPU figure from a percentage (see [`percent_to_hundredths`]).
    pub fn set_cpu_percent(&mut self, percent: f64) {
        self.cpu_hundredths = percent_to_hundredths(percent);
    }
}

/// Converts a percentage to the stored hundredths, rounding to the nearest; negative
/// and NaN inputs give 0 and huge ones saturate, so a bad reading cannot wrap.
pub fn percent_to_hundredths(percent: f64) -> u32 {
    if percent.is_nan() || percent <= 0.0 {
        return 0;
    }
    // `as` saturates for floats beyond the target range, which is the
    // intent: an absurd percentage is capped, never wrapped.
    #[allow(clippy::cast_possible_truncation)]
    let hundredths = (percent * 100.0).round() as u32;
    hundredths
}

/// One volume's statistics at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeSample {
    /// Unix milliseconds.
    pub ts: i64,
    pub io: IoCounters,
    /// Bytes the volume occupies on its pool.
    pub physical_size: u64,
    /// Bytes the guest sees.
    pub virtual_size: u64,
}

// Unsigned fields are stored by bit cast (`as i64` / `as u64`), which is lossless.
fn u32_field(row: &Row<'_>, index: usize, names: &[&'static str]) -> Result<u32> {
    let value = row.values[index];
    u32::try_from(value).map_err(|_| Error::ValueOutOfRange {
        column: names[index],
        value,
    })
}

fn check_len(row: &Row<'_>, names: &[&'static str]) -> Result<()> {
    if row.values.len() != names.len() {
        return Err(Error::ColumnCount {
            expected: names.len(),
            got: row.values.len(),
        });
    }
    Ok(())
}

impl Schema for VmSample {
    const COLUMN_NAMES: &'static [&'static str] = &[
        "cpu_hundredths",
        "vcpus",
        "memory_actual_kib",
        "memory_unused_kib",
        "memory_rss_kib",
        "memory_target_kib",
        "net_rx_bytes",
        "net_tx_bytes",
        "net_rx_packets",
        "net_tx_packets",
        "disk_read_bytes",
        "disk_write_bytes",
        "disk_read_ops",
        "disk_write_ops",
    ];

    fn ts(&self) -> i64 {
        self.ts
    }

    fn write_columns(&self, out: &mut [i64]) {
        let m = &self.memory;
        let n = &self.network;
        let d = &self.disk;
        let values = [
            i64::from(self.cpu_hundredths),
            i64::from(self.vcpus),
            m.actual_kib as i64,
            m.unused_kib as i64,
            m.rss_kib as i64,
            m.target_kib as i64,
            n.rx_bytes as i64,
            n.tx_bytes as i64,
            n.rx_packets as i64,
            n.tx_packets as i64,
            d.read_bytes as i64,
            d.write_bytes as i64,
            d.read_ops as i64,
            d.write_ops as i64,
        ];
        out.copy_from_slice(&values);
    }

    fn from_row(row: Row<'_>) -> Result<Self> {
        let names = Self::COLUMN_NAMES;
        check_len(&row, names)?;
        let v = |i: usize| row.values[i] as u64;
        Ok(Self {
            ts: row.ts,
            cpu_hundredths: u32_field(&row, 0, names)?,
            vcpus: u32_field(&row, 1, names)?,
            memory: MemoryStats {
                actual_kib: v(2),
                unused_kib: v(3),
                rss_kib: v(4),
                target_kib: v(5),
            },
            network: NetCounters {
                rx_bytes: v(6),
                tx_bytes: v(7),
                rx_packets: v(8),
                tx_packets: v(9),
            },
            disk: IoCounters {
                read_bytes: v(10),
                write_bytes: v(11),
                read_ops: v(12),
                write_ops: v(13),
            },
        })
    }
}

impl Schema for VolumeSample {
    const COLUMN_NAMES: &'static [&'static str] = &[
        "read_bytes",
        "write_bytes",
        "read_ops",
        "write_ops",
        "physical_size",
        "virtual_size",
    ];

    fn ts(&self) -> i64 {
        self.ts
    }

    fn write_columns(&self, out: &mut [i64]) {
        let io = &self.io;
        let values = [
            io.read_bytes as i64,
            io.write_bytes as i64,
            io.read_ops as i64,
            io.write_ops as i64,
            self.physical_size as i64,
            self.virtual_size as i64,
        ];
        out.copy_from_slice(&values);
    }

    fn from_row(row: Row<'_>) -> Result<Self> {
        check_len(&row, Self::COLUMN_NAMES)?;
        let v = |i: usize| row.values[i] as u64;
        Ok(Self {
            ts: row.ts,
            io: IoCounters {
                read_bytes: v(0),
                write_bytes: v(1),
                read_ops: v(2),
                write_ops: v(3),
            },
            physical_size: v(4),
            virtual_size: v(5),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, decode_samples, decode_samples_range, encode_samples, BlockBuilder};

    fn vm(i: u64) -> VmSample {
        VmSample {
            ts: 1_700_000_000_000 + i as i64 * 60_000,
            cpu_hundredths: (i * 37 % 10_001) as u32,
            vcpus: 4,
            memory: MemoryStats {
                actual_kib: 8 << 20,
                unused_kib: (6 << 20) - i * 4,
                rss_kib: (2 << 20) + i * 4,
                target_kib: 8 << 20,
            },
            network: NetCounters {
                rx_bytes: u64::MAX - 1000 + i,
                tx_bytes: i * 1500,
                rx_packets: i * 3,
                tx_packets: i,
            },
            disk: IoCounters {
                read_bytes: 0,
                write_bytes: i * 4096,
                read_ops: 0,
                write_ops: i,
            },
        }
    }

    #[test]
    fn vm_samples_round_trip() {
        let samples: Vec<VmSample> = (0..60).map(vm).collect();
        let bytes = encode_samples(&samples).unwrap();
        assert_eq!(decode_samples::<VmSample>(&bytes).unwrap(), samples);
        let part = decode_samples_range::<VmSample>(&bytes, samples[5].ts, samples[8].ts).unwrap();
        assert_eq!(part, &samples[5..8]);
    }

    #[test]
    fn volume_samples_round_trip() {
        let samples: Vec<VolumeSample> = (0..30u64)
            .map(|i| VolumeSample {
                ts: i as i64 * 1000,
                io: IoCounters {
                    read_bytes: i * 512,
                    write_bytes: i * i,
                    read_ops: i,
                    write_ops: i / 2,
                },
                physical_size: 1 << 30,
                virtual_size: 10 << 30,
            })
            .collect();
        let bytes = encode_samples(&samples).unwrap();
        assert_eq!(decode_samples::<VolumeSample>(&bytes).unwrap(), samples);
    }

    #[test]
    fn schema_mismatch_is_an_error() {
        let bytes = encode_samples(&[vm(0)]).unwrap();
        assert_eq!(
            decode_samples::<VolumeSample>(&bytes),
            Err(Error::ColumnCount {
                expected: 6,
                got: 14
            })
        );
    }

    #[test]
    fn out_of_range_cpu_is_an_error() {
        let mut b = BlockBuilder::for_schema::<VmSample>().unwrap();
        let mut row = [0i64; 14];
        row[0] = -1;
        b.push(0, &row).unwrap();
        let block = decode(&b.finish()).unwrap();
        assert_eq!(
            block.samples::<VmSample>(),
            Err(Error::ValueOutOfRange {
                column: "cpu_hundredths",
                value: -1
            })
        );
    }

    #[test]
    fn percent_conversion() {
        assert_eq!(percent_to_hundredths(12.345), 1235);
        assert_eq!(percent_to_hundredths(100.0), 10_000);
        assert_eq!(percent_to_hundredths(-3.0), 0);
        assert_eq!(percent_to_hundredths(f64::NAN), 0);
        assert_eq!(percent_to_hundredths(f64::INFINITY), u32::MAX);
        let mut s = VmSample::default();
        s.set_cpu_percent(42.42);
        assert_eq!(s.cpu_percent(), 42.42);
    }
}
