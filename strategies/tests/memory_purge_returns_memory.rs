//! `memory-purge` against the real allocator: freed memory really goes back to the OS.
#![cfg(feature = "jemalloc")]

use perfpilot_strategies::{jemalloc, proc_self, Context, MemoryPurge, Strategy};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "current_thread")]
async fn purge_returns_freed_memory_to_the_os() {
    // Allocate ~300 MiB in 64 KiB chunks, touch every page, and free it all on this thread:
    // jemalloc keeps the dirty pages (10 s decay by default), so RSS stays high.
    let chunks: Vec<Vec<u8>> = (0..4800)
        .map(|i| vec![(i % 251) as u8 + 1; 64 * 1024])
        .collect();
    let touched: u64 = chunks.iter().map(|c| u64::from(c[c.len() - 1])).sum();
    assert!(touched > 0);
    drop(chunks);

    let resident_before = jemalloc::read_stats().unwrap().resident_bytes;
    let rss_before = proc_self::rss_bytes().unwrap();
    assert!(
        resident_before > 200 * MIB,
        "dirty pages kept before the purge: resident {} MiB",
        resident_before / MIB
    );

    let ctx = Context::standalone();
    let outcome = MemoryPurge::default().run(ctx).await.unwrap();

    let rss_after = proc_self::rss_bytes().unwrap();
    let resident_after = jemalloc::read_stats().unwrap().resident_bytes;
    assert!(outcome.acted, "{outcome:?}");
    assert!(
        rss_after + 200 * MIB < rss_before,
        "RSS fell from {} MiB to {} MiB",
        rss_before / MIB,
        rss_after / MIB
    );
    assert!(resident_after + 200 * MIB < resident_before);
    let reported = outcome.report["rss_released_bytes"].as_u64().unwrap();
    assert!(
        reported > 200 * MIB,
        "reported {} MiB released",
        reported / MIB
    );
    assert!(outcome.report["resident_released_bytes"].as_u64().unwrap() > 200 * MIB);
}
