//! `Trim` on real moka caches, alone and through the `cache-trim` strategy.
#![cfg(feature = "moka")]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::sync::Cache;
use perfpilot_strategies::{
    CacheTrim, Context, Level, Registry, RunKind, Strategy, Trim, WeighedInBytes,
};

/// A cache of `n` entries `0..n`, settled so that moka's counters are exact.
fn filled(n: u64) -> Cache<u64, String> {
    let cache = Cache::new(100_000);
    for i in 0..n {
        cache.insert(i, format!("value-{i}"));
    }
    cache.run_pending_tasks();
    cache
}

/// A cache whose weigher returns each value's length in bytes, filled with `n` values of
/// 100 to 700 bytes.
fn frames(n: u64) -> Cache<u64, Vec<u8>> {
    let cache = Cache::builder()
        .max_capacity(1 << 30)
        .weigher(|_key, value: &Vec<u8>| value.len().try_into().unwrap_or(u32::MAX))
        .build();
    for i in 0..n {
        cache.insert(i, vec![0; 100 * (1 + i as usize % 7)]);
    }
    cache.run_pending_tasks();
    cache
}

fn context(level: Level, registry: Registry) -> Context {
    Context {
        level,
        kind: RunKind::Automatic,
        registry: Arc::new(registry),
        ..Context::standalone()
    }
}

#[test]
fn a_quarter_of_a_thousand_entries_is_evicted() {
    let cache = filled(1000);
    assert_eq!(cache.size().entries, 1000);

    let report = cache.evict(0.25);

    assert_eq!(report.entries_removed, 250);
    assert_eq!(
        report.bytes_freed, None,
        "a plain cache does not claim bytes"
    );
    assert_eq!(cache.size().entries, 750);
    assert_eq!(cache.iter().count(), 750);
}

#[test]
fn evicting_rounds_up_and_never_past_empty() {
    let cache = filled(10);
    assert_eq!(cache.evict(0.25).entries_removed, 3); // ⌈2.5⌉
    assert_eq!(cache.evict(1.0).entries_removed, 7);
    assert_eq!(cache.evict(0.5), Default::default());
    assert_eq!(cache.size().entries, 0);
}

#[test]
fn expire_removes_entries_past_their_ttl() {
    let cache: Cache<u64, String> = Cache::builder()
        .time_to_live(Duration::from_millis(50))
        .build();
    for i in 0..100 {
        cache.insert(i, i.to_string());
    }
    cache.run_pending_tasks();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(cache.get(&1), None, "moka hides expired entries at once...");
    assert_eq!(
        cache.entry_count(),
        100,
        "...but keeps them until housekeeping"
    );

    let report = cache.expire();

    assert_eq!(report.entries_removed, 100);
    assert_eq!(cache.entry_count(), 0);
    assert_eq!(cache.expire(), Default::default(), "nothing left to expire");
}

#[test]
fn byte_weighted_caches_report_the_drop_in_weighted_size() {
    let cache = frames(1000);
    let trimmed = WeighedInBytes(cache.clone());
    let before = cache.weighted_size();
    assert_eq!(trimmed.size().bytes, Some(before));
    assert_eq!(
        cache.size().bytes,
        None,
        "the plain impl cannot know the unit"
    );

    let report = trimmed.evict(0.25);

    let after = cache.weighted_size();
    assert_eq!(report.entries_removed, 250);
    assert_eq!(report.bytes_freed, Some(before - after));
    assert!(
        before - after >= 250 * 100,
        "freed {} bytes",
        before - after
    );
    assert_eq!(trimmed.size().bytes, Some(after));
}

#[tokio::test]
async fn cache_trim_counts_expired_entries_as_expired_not_evicted() {
    let stale: Cache<u64, String> = Cache::builder()
        .time_to_live(Duration::from_millis(50))
        .build();
    for i in 0..100 {
        stale.insert(i, i.to_string());
    }
    stale.run_pending_tasks();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = filled(100);
    let registry = Registry {
        caches: vec![
            ("stale".into(), Arc::new(stale.clone()) as Arc<dyn Trim>),
            ("fresh".into(), Arc::new(fresh.clone())),
        ],
        ..Registry::default()
    };

    let outcome = CacheTrim::default()
        .run(context(Level::Warning, registry))
        .await
        .unwrap();

    let per_stale = &outcome.report["per_cache"]["stale"];
    assert_eq!(per_stale["entries_before"], 100, "{per_stale}");
    assert_eq!(per_stale["entries_expired"], 100, "{per_stale}");
    assert_eq!(per_stale["entries_evicted"], 0, "{per_stale}");
    assert_eq!(per_stale["entries_after"], 0, "{per_stale}");
    let per_fresh = &outcome.report["per_cache"]["fresh"];
    assert_eq!(per_fresh["entries_expired"], 0, "{per_fresh}");
    assert_eq!(per_fresh["entries_evicted"], 25, "{per_fresh}");
    assert_eq!(outcome.report["entries_trimmed"], 125);
    assert_eq!((stale.entry_count(), fresh.entry_count()), (0, 75));
}

#[tokio::test]
async fn cache_trim_reports_each_moka_cache_and_halves_them_at_critical() {
    for (level, fraction) in [(Level::Warning, 0.25), (Level::Critical, 0.5)] {
        let sessions = filled(1000);
        let frames = frames(400);
        let frame_bytes = frames.weighted_size();
        let registry = Registry {
            caches: vec![
                (
                    "sessions".into(),
                    Arc::new(sessions.clone()) as Arc<dyn Trim>,
                ),
                ("frames".into(), Arc::new(WeighedInBytes(frames.clone()))),
            ],
            ..Registry::default()
        };

        let outcome = CacheTrim::default()
            .run(context(level, registry))
            .await
            .unwrap();

        let (sessions_evicted, frames_evicted) = match level {
            Level::Critical => (500, 200),
            _ => (250, 100),
        };
        let report = &outcome.report;
        assert!(outcome.acted, "{level}: {}", outcome.summary);
        assert_eq!(report["fraction"], fraction, "{level}");
        assert_eq!(report["caches"], 2);
        assert_eq!(report["entries_trimmed"], sessions_evicted + frames_evicted);
        let freed = frame_bytes - frames.weighted_size();
        assert_eq!(
            report["bytes_freed"], freed,
            "only the byte-weighted cache counts"
        );

        let per_sessions = &report["per_cache"]["sessions"];
        assert_eq!(per_sessions["entries_before"], 1000, "{per_sessions}");
        assert_eq!(per_sessions["entries_removed"], sessions_evicted);
        assert_eq!(per_sessions["entries_after"], 1000 - sessions_evicted);
        assert_eq!(per_sessions["bytes_freed"], serde_json::Value::Null);
        assert_eq!(sessions.entry_count(), 1000 - sessions_evicted);

        let per_frames = &report["per_cache"]["frames"];
        assert_eq!(per_frames["entries_before"], 400, "{per_frames}");
        assert_eq!(per_frames["entries_removed"], frames_evicted);
        assert_eq!(per_frames["entries_after"], 400 - frames_evicted);
        assert_eq!(per_frames["bytes_freed"], freed);
        assert_eq!(per_frames["bytes_after"], frames.weighted_size());
    }
}

#[test]
fn the_eviction_listener_sees_every_evicted_entry_before_it_is_dropped() {
    let archive: Arc<Mutex<Vec<(u64, String, RemovalCause)>>> = Arc::default();
    let sink = archive.clone();
    let cache: Cache<u64, String> = Cache::builder()
        .max_capacity(100_000)
        .eviction_listener(move |key, value, cause| {
            sink.lock().unwrap().push((*key, value, cause));
        })
        .build();
    for i in 0..1000 {
        cache.insert(i, format!("value-{i}"));
    }

    let report = cache.evict(0.25);

    let archive = archive.lock().unwrap();
    let kept: HashSet<u64> = cache.iter().map(|(key, _)| *key).collect();
    let evicted: HashSet<u64> = (0..1000).filter(|key| !kept.contains(key)).collect();
    let archived: HashSet<u64> = archive.iter().map(|(key, _, _)| *key).collect();
    assert_eq!(report.entries_removed, 250);
    assert_eq!(evicted.len(), 250);
    assert_eq!(archive.len(), 250, "each evicted entry archived once");
    assert_eq!(archived, evicted);
    assert!(archive
        .iter()
        .all(|(key, value, cause)| *value == format!("value-{key}")
            && *cause == RemovalCause::Explicit));
}
