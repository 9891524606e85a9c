//! Cost as the work grows (SPEC §8 "scale"): one sample of a target holding many
//! connections (budget: 1 ms with 10,000 established), one sample of a cgroup of many
//! processes (2 ms with 1,000), one trigger evaluation with a long prediction window (50 µs
//! with `window = 1000`).
//!
//! Run with: cargo bench --bench scale
//!
//! `scripts/bench-scale.sh` sets up the loads and runs this bench once per row:
//!
//! - `PERFPILOT_SCALE_PID=<pid>`: `sample_target/<label>` samples that process as a sidecar
//!   agent does (`Target::Pid`): memory, CPU, open fds, connections on its listening ports.
//! - `PERFPILOT_SCALE_CGROUP=<dir>`: `sample_cgroup/<label>` samples that cgroup v2 directory
//!   (`Target::Cgroup`).
//! - `PERFPILOT_SCALE_LABEL`: the label of the row (by default `target`).
//!
//! Without them only `trigger_window/{10,100,1000}` runs: one `TriggerState::evaluate` of a
//! trigger with `predict.window` = 10, 100, 1,000, its window full of a noisy, slowly rising
//! signal that never fires (so every evaluation refits the trend); and `full_fit_1000`, a
//! Theil–Sen fit from scratch over 1,000 points.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use perfpilot::__internal::{Sampler, SamplerSettings, Target, TriggerState};
use perfpilot_strategies::{PredictSpec, Signal, TriggerSpec};

fn label() -> String {
    std::env::var("PERFPILOT_SCALE_LABEL").unwrap_or_else(|_| "target".to_owned())
}

fn sample_target(c: &mut Criterion) {
    let Some(pid) = std::env::var("PERFPILOT_SCALE_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return;
    };
    let mut sampler = Sampler::for_target(SamplerSettings::default(), Target::Pid(pid));
    let first = sampler.sample();
    eprintln!(
        "target pid {pid}: open_connections {:?}, open_fds {:?}",
        first.open_connections, first.open_fds
    );
    let mut group = c.benchmark_group("sample_target");
    group.bench_function(label(), |b| b.iter(|| black_box(sampler.sample())));
    group.finish();
}

fn sample_cgroup(c: &mut Criterion) {
    let Some(dir) = std::env::var_os("PERFPILOT_SCALE_CGROUP").map(PathBuf::from) else {
        return;
    };
    let mut sampler = Sampler::for_target(SamplerSettings::default(), Target::Cgroup(dir));
    let first = sampler.sample();
    eprintln!(
        "cgroup: process_count {:?}, memory_usage_bytes {:?}, open_fds {:?}",
        first.process_count, first.memory_usage_bytes, first.open_fds
    );
    let mut group = c.benchmark_group("sample_cgroup");
    group.bench_function(label(), |b| b.iter(|| black_box(sampler.sample())));
    group.finish();
}

fn trigger_window(c: &mut Criterion) {
    if std::env::var_os("PERFPILOT_SCALE_PID").is_some()
        || std::env::var_os("PERFPILOT_SCALE_CGROUP").is_some()
    {
        return;
    }
    let mut group = c.benchmark_group("trigger_window");
    for window in [10u32, 100, 1000] {
        let spec = TriggerSpec {
            predict: Some(PredictSpec {
                horizon: Duration::from_secs(30),
                at: Some(0.95),
                window,
            }),
            ..TriggerSpec::new(Signal::MemoryUsage, 0.8)
        };
        let mut trigger = TriggerState::new(spec);
        let start = Instant::now();
        let mut tick = 0u64;
        // A slow climb (never within 30 s of 0.95) with deterministic noise.
        let mut next = move || {
            tick += 1;
            let noise = ((tick.wrapping_mul(2_654_435_761) >> 7) % 1000) as f64 / 1e6;
            // A drift of 1e-9 a sample: +0.1 after 10^8 iterations, still far below 0.8.
            let value = 0.3 + 1e-9 * tick as f64 + noise;
            (value, start + Duration::from_millis(100 * tick))
        };
        for _ in 0..window {
            let (value, now) = next();
            trigger.evaluate(Some(value), now);
        }
        group.bench_function(window.to_string(), |b| {
            b.iter(|| {
                let (value, now) = next();
                let evaluation = trigger.evaluate(Some(value), now);
                assert!(!evaluation.fire, "the bench signal must not fire");
                black_box(evaluation)
            })
        });
    }
    // A fit from scratch over 1,000 points: what the first fit after a window restarts costs,
    // and a refit when the trend leaves the kept band of slopes.
    let points: Vec<(f64, f64)> = (0..1000u64)
        .map(|i| {
            let noise = ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f64 / 1e5;
            (i as f64 * 0.1, 0.3 + 1e-7 * i as f64 + noise)
        })
        .collect();
    group.bench_function("full_fit_1000", |b| {
        b.iter(|| black_box(perfpilot::__internal::trend::theil_sen(black_box(&points))))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = sample_target, sample_cgroup, trigger_window
}
criterion_main!(benches);
