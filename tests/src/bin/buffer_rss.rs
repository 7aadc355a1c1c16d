//! Memory of the agent's buffer with a large backlog, in isolation:
//! fills N readings (records of 1,000), reopens, then reads and acknowledges
//! everything the way the uplink does, printing RSS at each step.
//!   cargo run --release -p e2e-tests --bin buffer_rss -- [READINGS]
use anyhow::Result;
use e2e_tests::bench::rss_mib;
use edge_agent::buffer::{Buffer, BufferOptions, Lane, NewReading, Priority, RecordId};
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<()> {
    let total: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    // The fill runs in a child process so the reopen starts from a clean heap.
    let dir_arg = std::env::args().nth(2);
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
    let fill_only = std::env::args().nth(3).as_deref() == Some("fill");
    let steady = std::env::args().nth(3).as_deref() == Some("steady");
    let pid = std::process::id();
    let device: Arc<str> = "meter-1".into();
    let unit: Arc<str> = "V".into();
    let metrics: Vec<Arc<str>> = (0..40).map(|i| format!("metric_{i:02}").into()).collect();
    if steady {
        // Hub connected: every record is read and acknowledged right after it is written.
        let b = Buffer::open(&path, BufferOptions::with_cache(8 << 20))?;
        let mut after = None;
        for i in 0..total / 1000 {
            let rows: Vec<NewReading> = (0..1000u64)
                .map(|k| NewReading {
                    device_id: Arc::clone(&device),
                    metric: Arc::clone(&metrics[(k % 40) as usize]),
                    timestamp_us: 1_790_000_000_000_000 + (i * 1000 + k) as i64,
                    value: k as f64 * 0.5,
                    unit: Arc::clone(&unit),
                    quality: 1,
                    priority: Priority::Normal,
                })
                .collect();
            b.append(&rows).await?;
            let recs = b.read(Lane::Normal, after, None, 10_000)?;
            if let Some(last) = recs.last() {
                after = Some(last.first_seq);
                let ids: Vec<RecordId> = recs.iter().map(|r| r.id()).collect();
                b.ack(&ids, last.last_seq())?;
            }
            if (i + 1) % 1000 == 0 {
                println!(
                    "  steady: {} readings through: RSS {:.1} MiB",
                    (i + 1) * 1000,
                    rss_mib(pid)
                );
            }
        }
        return Ok(());
    }
    if fill_only {
        let mut opts = BufferOptions::with_cache(8 << 20);
        if let Ok(mib) = std::env::var("RECYCLE_AFTER_MIB") {
            opts.recycle_after_bytes = mib.parse::<u64>()? << 20;
        }
        let b = Buffer::open(&path, opts)?;
        // Readings per record (one poll cycle or one MQTT read group).
        let per_record: u64 = std::env::var("RECORD_READINGS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let fill_started = Instant::now();
        let mut fill_peak: f64 = 0.0;
        for i in 0..total / per_record {
            let rows: Vec<NewReading> = (0..per_record)
                .map(|k| NewReading {
                    device_id: Arc::clone(&device),
                    metric: Arc::clone(&metrics[(k % 40) as usize]),
                    timestamp_us: 1_790_000_000_000_000 + (i * per_record + k) as i64,
                    value: k as f64 * 0.5,
                    unit: Arc::clone(&unit),
                    quality: 1,
                    priority: Priority::Normal,
                })
                .collect();
            b.append(&rows).await?;
            if (i + 1) % 50 == 0 {
                fill_peak = fill_peak.max(rss_mib(pid));
            }
            if (i + 1) % 1000 == 0 {
                println!(
                    "  {} readings written: RSS {:.1} MiB",
                    (i + 1) * 1000,
                    rss_mib(pid)
                );
            }
        }
        b.flush().await?;
        println!("peak RSS while filling (sampled every 50,000 readings): {fill_peak:.1} MiB");
        println!(
            "filled {total} readings in {:.1} s ({} reopens of sled): RSS {:.1} MiB",
            fill_started.elapsed().as_secs_f64(),
            b.stats().recycles,
            rss_mib(pid)
        );
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only returns free heap pages to the OS.
        unsafe { malloc_trim(0) };
        println!("after malloc_trim: RSS {:.1} MiB", rss_mib(pid));
        drop(b);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        unsafe { malloc_trim(0) };
        println!("after dropping the buffer: RSS {:.1} MiB", rss_mib(pid));
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
    let mut after = None;
    loop {
        let recs = b.read(Lane::Normal, after, None, 10_000)?;
        let Some(last) = recs.last() else { break };
        after = Some(last.first_seq);
        let ids: Vec<RecordId> = recs.iter().map(|r| r.id()).collect();
        b.ack(&ids, last.last_seq())?;
        peak = peak.max(rss_mib(pid));
    }
    println!(
        "read and acked everything: peak RSS {peak:.1} MiB, now {:.1} MiB",
        rss_mib(pid)
    );
    Ok(())
}
