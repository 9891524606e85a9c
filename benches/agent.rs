//! The agent's own costs (SPEC §8): one sample of its own process (budget: 20 µs median),
//! one trigger evaluation over the built-in strategies, and rendering `/performance-metrics`.
//!
//! Run with: cargo bench --bench agent
//!
//! The bench binary runs on jemalloc with the agent binary's options
//! ([`perfpilot::cli::MALLOC_CONF`]: one arena), so a sample includes reading jemalloc's
//! statistics (`sample_with_jemalloc`), which refreshes its stats epoch and walks every
//! arena. With jemalloc's default of four arenas per CPU that part grows with the number of
//! threads that allocated (measure it with `_RJEM_MALLOC_CONF=narenas:8`, the default on 2
//! CPUs, which overrides the compiled-in options).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use perfpilot::__internal::{
    History, MetricsDocument, Sampler, SamplerSettings, StrategyView, TriggerState, View,
};
use perfpilot::OptimizationRecord;
use perfpilot_strategies::{Level, Outcome, RunKind, Signal, StrategiesConfig};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The agent binary's jemalloc options, exported as in `src/main.rs`.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: perfpilot::cli::MallocConf = perfpilot::cli::MallocConf::AGENT;

fn sample(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut sampler = runtime.block_on(async { Sampler::new(SamplerSettings::default()) });
    c.bench_function("sample_with_jemalloc", |b| {
        b.iter(|| black_box(sampler.sample()))
    });
}

fn evaluate(c: &mut Criterion) {
    let mut sampler = Sampler::new(SamplerSettings::default());
    let snapshot = sampler.sample();
    let mut triggers: Vec<TriggerState> = StrategiesConfig::default()
        .build()
        .into_iter()
        .map(|registered| TriggerState::new(registered.trigger))
        .collect();
    let start = Instant::now();
    let mut tick = 0u64;
    c.bench_function("evaluate_4_triggers", |b| {
        b.iter(|| {
            tick += 1;
            let now = start + Duration::from_millis(tick);
            for trigger in &mut triggers {
                let value = snapshot.signal(trigger.spec().signal);
                black_box(trigger.evaluate(value, now));
            }
        })
    });
}

fn render_metrics(c: &mut Criterion) {
    let mut sampler = Sampler::new(SamplerSettings::default());
    let snapshot = Arc::new(sampler.sample());
    let mut history = History::new(50);
    for _ in 0..50 {
        let id = history.next_id();
        history.push(OptimizationRecord {
            id,
            strategy: "memory-purge".into(),
            kind: RunKind::Automatic,
            reason: "memory_usage = 0.85 above 0.8 (WARNING)".into(),
            signal: Signal::MemoryUsage,
            level: Level::Warning,
            started_at: SystemTime::now(),
            duration_ms: 1.5,
            success: true,
            error: None,
            before: Some(0.85),
            after: Some(0.6),
            result: Some(
                Outcome::acted("purged all arenas")
                    .with("rss_released_bytes", 123_456_789u64)
                    .with("purge_ms", 1.2),
            ),
            dry_run: false,
            prediction: None,
            helped: Some(true),
            budget: None,
        });
    }
    let view = View {
        snapshot,
        sampled_at: SystemTime::now(),
        stats: history.stats().clone(),
        is_optimizing: false,
        enabled: true,
        dry_run: false,
        interval: Duration::from_secs(1),
        recent: history.recent().cloned().collect(),
        strategies: StrategiesConfig::default()
            .build()
            .into_iter()
            .map(|r| StrategyView {
                name: r.strategy.name().to_owned(),
                aliases: r
                    .strategy
                    .aliases()
                    .iter()
                    .map(|a| (*a).to_owned())
                    .collect(),
                description: r.strategy.description().to_owned(),
                level: Level::Ok,
                value: Some(0.1),
                consecutive_failures: 0,
                backoff_until: None,
                cooldown: r.trigger.cooldown,
                unhelpful_runs: 0,
                forecast: None,
                threshold: Some(r.trigger.above),
                trigger: r.trigger,
                rung_only: false,
            })
            .collect(),
        fast_watch: None,
        watch_wakes: Vec::new(),
        sampling_error: None,
        budgets: Vec::new(),
        learned: Default::default(),
    };
    let worker = serde_json::json!(12345);
    c.bench_function("render_performance_metrics_50_records", |b| {
        b.iter(|| black_box(serde_json::to_vec(&MetricsDocument::new(&worker, &view))))
    });
}

criterion_group!(benches, sample, evaluate, render_metrics);
criterion_main!(benches);
