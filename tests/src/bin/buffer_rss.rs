//! Memory of the agent's buffer with a large backlog, in isolation:
//! fills N readings in a child process (the hub away: the backlog grows),
//! reopens, then reads and acknowledges everything the way the uplink does,
//! printing RSS at each step.
//!   cargo run --release -p e2e-tests --bin buffer_rss -- [READINGS]
//!   ... -- READINGS DIR steady   (hub keeping up: each record acked at once)
//! Environment: RECORD_READINGS (readings per record, default 1,000: one
//! poll cycle or one MQTT read group), RECYCLE_AFTER_MIB
//! (`buffer.recycle_after_mib`, default 16, 0 = never reopen sled).
use anyhow::Result;
use e2e_tests::bench::rss_mib;
use edge_agent::buffer::{Buffer, BufferOptions, Lane, NewReading, Priority, RecordId};
use std::sync::Arc;
use std::time::Instant;

/// Synthetic meter readings, 40 metrics, one record at a time.
struct Records {
    per_record: u64,
    device: Arc<str>,
    unit: Arc<str>,
    metrics: Vec<Arc<str>>,
}

impl Records {
    fn new() -> Result<Records> {
        Ok(Records {
            per_record: std::env::var("RECORD_READINGS")
                .ok()
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or(1000),
            device: "meter-1".into(),
            unit: "V".into(),
            metrics: (0..40).map(|i| format!("metric_{i:02}").into()).collect(),
        })
    }

    /// The `i`-th record.
    fn record(&self, i: u64) -> Vec<NewReading> {
        (0..self.per_record)
            .map(|k| NewReading {
                device_id: Arc::clone(&self.device),
                metric: Arc::clone(&self.metrics[(k % 40) as usize]),
                timestamp_us: 1_790_000_000_000_000 + (i * self.per_record + k) as i64,
                value: k as f64 * 0.5,
                unit: Arc::clone(&self.unit),
                quality: 1,
                priority: Priority::Normal,
            })
            .collect()
    }
}

fn options() -> Result<BufferOptions> {
    let mut opts = BufferOptions::with_cache(8 << 20);
    if let Ok(mib) = std::env::var("RECYCLE_AFTER_MIB") {
        opts.recycle_after_bytes = mib.parse::<u64>()? << 20;
    }
    Ok(opts)
}

/// Reads and acknowledges everything after `after`, like the uplink; returns
/// the new cursor.
fn ack_everything(
    b: &Buffer,
    mut after: Option<u64>,
    mut each: impl FnMut(),
) -> Result<Option<u64>> {
    loop {
        let recs = b.read(Lane::Normal, after, None, 10_000)?;
        let Some(last) = recs.last() else {
            return Ok(after);
        };
        after = Some(last.first_seq);
        let ids: Vec<RecordId> = recs.iter().map(|r| r.id()).collect();
        b.ack(&ids, last.last_seq())?;
        each();
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let total: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    // The fill runs in a child process so the reopen starts from a clean heap.
    let dir_arg = std::env::args().nth(2);
    let mode = std::env::args().nth(3);
    let tmp = tempfile::tempdir()?;
    let path = match &dir_arg {
        Some(p) => std::path::PathBuf::from(p),
        None => tmp.path().to_path_buf(),
    };
    if dir_arg.is_none() {
        let status = std::process::Command::new(std::env::current_exe()?)
            .arg(total.to_string())
            .arg(&path)
            .arg("fill")
            .status()?;
        anyhow::ensure!(status.success(), "fill failed");
    }
    let pid = std::process::id();
    let source = Records::new()?;
    let records = total / source.per_record;
    // Print a line per million readings, sample RSS every 50,000.
    let every = |n: u64| (n / source.per_record).max(1);

    if mode.as_deref() == Some("steady") {
        let b = Buffer::open(&path, options()?)?;
        let mut after = None;
        for i in 0..records {
            b.append(&source.record(i)).await?;
            after = ack_everything(&b, after, || {})?;
            if (i + 1) % every(1_000_000) == 0 {
                let done = (i + 1) * source.per_record;
                println!(
                    "  steady: {done} readings through: RSS {:.1} MiB",
                    rss_mib(pid)
                );
            }
        }
        return Ok(());
    }

    if mode.as_deref() == Some("fill") {
        let b = Buffer::open(&path, options()?)?;
        let started = Instant::now();
        let mut peak: f64 = 0.0;
        for i in 0..records {
            b.append(&source.record(i)).await?;
            if (i + 1) % every(50_000) == 0 {
                peak = peak.max(rss_mib(pid));
            }
            if (i + 1) % every(1_000_000) == 0 {
                let done = (i + 1) * source.per_record;
                println!("  {done} readings written: RSS {:.1} MiB", rss_mib(pid));
            }
        }
        b.flush().await?;
        println!("peak RSS while filling (sampled every 50,000 readings): {peak:.1} MiB");
        println!(
            "filled {total} readings in {:.1} s ({} reopens of sled): RSS {:.1} MiB",
            started.elapsed().as_secs_f64(),
            b.stats().recycles,
            rss_mib(pid)
        );
        // What a reopen in the same process gives back (the buffer's
        // `recycle_after_bytes` relies on it).
        drop(b);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        println!("after closing the buffer: RSS {:.1} MiB", rss_mib(pid));
        let b = Buffer::open(&path, BufferOptions::with_cache(8 << 20))?;
        println!("reopened in the same process: RSS {:.1} MiB", rss_mib(pid));
        drop(b);
        return Ok(());
    }

    let t = Instant::now();
    println!("before opening: RSS {:.1} MiB", rss_mib(pid));
    let b = Buffer::open(&path, BufferOptions::with_cache(8 << 20))?;
    println!(
        "reopened in {:.1} s: RSS {:.1} MiB, backlog {}",
        t.elapsed().as_secs_f64(),
        rss_mib(pid),
        b.stats().backlog
    );
    let mut peak: f64 = 0.0;
    ack_everything(&b, None, || peak = peak.max(rss_mib(pid)))?;
    println!(
        "read and acked everything: peak RSS {peak:.1} MiB, now {:.1} MiB",
        rss_mib(pid)
    );
    Ok(())
}
