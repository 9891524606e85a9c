//! The Prometheus text exposition (`GET /metrics`): every signal as a gauge, optimization
//! runs as counters, run durations as a histogram, trigger levels, and build info.
//!
//! Names follow Prometheus conventions: `perfpilot_` prefix, base units (bytes, seconds,
//! ratios), `_total` on counters. A signal that was not read is absent from the output, not 0.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use perfpilot_strategies::signals::{MetricUnit, SignalRow, SIGNALS};
use perfpilot_strategies::{
    Level, MemoryLimitSource, MemoryUsageSource, PressureKind, PressureResource, PressureSet,
    Snapshot,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{broadcast, watch};
use tracing::warn;

use crate::engine::{StrategyView, View};
use crate::events::Event;
mod budgets;

use crate::budget::BudgetView;
use crate::history::{OptimizationRecord, StrategyStats};

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;
type Gauges = Family<Labels, FloatGauge>;
type FloatCounters = Family<Labels, Counter<f64, AtomicU64>>;

/// Upper bounds of the run-duration histogram, in seconds (1 ms to 30 s).
const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The agent's Prometheus metrics, updated by the engine and encoded on scrape.
///
/// The signals' gauges come from the signal table
/// ([`perfpilot_strategies::signals::SIGNALS`]); the families here by hand are the details
/// that are not signals (limits, sources, PSI by scope, counters, the engine's state).
pub struct Telemetry {
    registry: Registry,
    /// One gauge series per signal that has one, in table order.
    signals: Vec<(&'static SignalRow, Gauges, Labels)>,
    /// The signals' families by name, for the details that share one (`load_average`).
    families: HashMap<&'static str, Gauges>,
    virtual_memory: Gauges,
    memory_limit: Gauges,
    memory_usage_bytes: Gauges,
    oom_kill_events: Counter,
    watch_wakes: Family<Labels, Counter>,
    watch_cadence: Gauges,
    pressure: Gauges,
    stall: FloatCounters,
    uptime: Gauges,
    runtime_workers: Gauges,
    runtime_tasks: Gauges,
    interval: FloatGauge,
    optimizing: Gauge,
    samples: Counter,
    runs: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    levels: Family<Labels, Gauge>,
    trigger_values: Gauges,
    thresholds: Gauges,
    forecasts: Gauges,
    cooldowns: Gauges,
    effectiveness: Gauges,
    relief: Gauges,
    predictive_runs: Family<Labels, Counter>,
    budgets: budgets::BudgetMetrics,
    reloads: Family<Labels, Counter>,
    reload_failed: Gauge,
    /// What it observes, when it follows an engine ([`Telemetry::follow`]).
    feed: Mutex<Option<Feed>>,
}

/// An engine's published view and events, as [`Telemetry`] follows them.
struct Feed {
    view: watch::Receiver<Arc<View>>,
    events: broadcast::Receiver<Event>,
    /// The last sample observed (a sample is counted once, from its event or the view).
    last_snapshot: Option<Arc<Snapshot>>,
    /// The id of the last record counted (a run is counted when its record is published,
    /// before it is judged).
    last_record: u64,
    /// The strategies of the last view (a reload may remove some: their gauges go).
    strategies: Vec<String>,
    /// The fast watch's wake counts of the last view, by signal and how.
    watch_wakes: std::collections::BTreeMap<(perfpilot_strategies::Signal, &'static str), u64>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Registers every metric; each series carries `worker="<worker>"` (the agent's identity,
    /// see [`crate::worker`]) so a fleet's series stay apart in one Prometheus.
    pub fn new(worker: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "perfpilot",
            [(Cow::Borrowed("worker"), Cow::Owned(worker.to_owned()))].into_iter(),
        );
        let mut families: HashMap<&'static str, Gauges> = HashMap::new();
        let mut signals = Vec::new();
        for row in SIGNALS {
            let Some(metric) = row.metric else { continue };
            let family = families
                .entry(metric.family)
                .or_insert_with(|| {
                    let family = Gauges::default();
                    let unit = metric.unit.map(|unit| match unit {
                        MetricUnit::Bytes => Unit::Bytes,
                        MetricUnit::Seconds => Unit::Seconds,
                    });
                    match unit {
                        Some(unit) => registry.register_with_unit(
                            metric.family,
                            metric.help,
                            unit,
                            family.clone(),
                        ),
                        None => registry.register(metric.family, metric.help, family.clone()),
                    }
                    family
                })
                .clone();
            let labels = metric
                .label
                .map(|(name, value)| vec![(name, value.to_owned())])
                .unwrap_or_default();
            signals.push((row, family, labels));
        }
        let mut gauge = |name: &str, help: &str, unit: Option<Unit>| {
            let family = Gauges::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
                None => registry.register(name, help, family.clone()),
            }
            family
        };
        let virtual_memory = gauge(
            "virtual_memory",
            "Virtual memory size of the watched process",
            Some(Unit::Bytes),
        );
        let memory_limit = gauge(
            "memory_limit",
            "The memory limit usage is measured against, by source",
            Some(Unit::Bytes),
        );
        let memory_usage_bytes = gauge(
            "memory_usage",
            "The memory use the usage ratio is measured with, by source (rss, \
             cgroup_working_set, summed_rss)",
            Some(Unit::Bytes),
        );
        let pressure = gauge(
            "pressure_ratio",
            "Pressure stall information: share of time tasks stalled on a resource, by \
             resource, kind (some, full), window (avg10, avg60, avg300) and scope (system, cgroup)",
            None,
        );
        let uptime = gauge(
            "uptime",
            "Uptime of the watched process",
            Some(Unit::Seconds),
        );
        let runtime_workers = gauge("runtime_workers", "tokio worker threads", None);
        let runtime_tasks = gauge("runtime_live_tasks", "Live tokio tasks", None);
        let trigger_values = gauge(
            "trigger_value",
            "The (smoothed) value of each strategy's trigger signal",
            None,
        );
        let thresholds = gauge(
            "trigger_threshold",
            "The threshold in force for each strategy's trigger (configured or learned)",
            None,
        );
        let forecasts = gauge(
            "trigger_forecast",
            "Time until the trigger signal's trend reaches its target (absent when not rising)",
            Some(Unit::Seconds),
        );
        let cooldowns = gauge(
            "strategy_cooldown",
            "Cooldown in force between automatic runs (lengthened while runs do not help)",
            Some(Unit::Seconds),
        );
        let effectiveness = gauge(
            "strategy_effectiveness_ratio",
            "Share of a strategy's judged runs that relieved its signal",
            None,
        );
        let relief = gauge(
            "strategy_mean_relief",
            "Mean fall of the trigger signal per run (before minus after)",
            None,
        );

        let interval = FloatGauge::default();
        registry.register_with_unit(
            "sampling_interval",
            "The sampling interval in force",
            Unit::Seconds,
            interval.clone(),
        );
        let optimizing = Gauge::default();
        registry.register(
            "optimizing",
            "1 while an optimization runs",
            optimizing.clone(),
        );
        let stall = FloatCounters::default();
        registry.register_with_unit(
            "pressure_stall",
            "Total time tasks stalled on a resource (PSI total), by resource, kind and scope",
            Unit::Seconds,
            stall.clone(),
        );
        let samples = Counter::default();
        registry.register("samples", "Samples taken", samples.clone());
        let oom_kill_events = Counter::default();
        registry.register(
            "oom_kill_events",
            "OOM kills the agent saw in the watched process's memory cgroup (rises of its count)",
            oom_kill_events.clone(),
        );
        let watch_wakes = Family::<Labels, Counter>::default();
        registry.register(
            "fast_watch_wakes",
            "Immediate samples the fast watch asked for, by signal and how: a crossing seen by a poll (poll), a PSI trigger (psi) or a read a kernel cgroup notification asked for (cgroup-event), or a budget's urgency (urgency)",
            watch_wakes.clone(),
        );
        let watch_cadence = Gauges::default();
        registry.register(
            "fast_watch_armed",
            "1 while the fast watch reads the signal between samples, 0 while disarmed; by signal, cadence (explicit, armed, disarmed) and why",
            watch_cadence.clone(),
        );
        let runs = Family::<Labels, Counter>::default();
        registry.register(
            "optimizations",
            "Optimization runs by strategy, kind and outcome",
            runs.clone(),
        );
        let predictive_runs = Family::<Labels, Counter>::default();
        registry.register(
            "predictive_optimizations",
            "Automatic runs fired by a forecast before the threshold was crossed, by strategy",
            predictive_runs.clone(),
        );
        let durations = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "optimization_duration",
            "How long optimization runs took, by strategy",
            Unit::Seconds,
            durations.clone(),
        );
        let levels = Family::<Labels, Gauge>::default();
        registry.register(
            "trigger_level",
            "Each strategy's trigger level: 0 OK, 1 WARNING, 2 CRITICAL",
            levels.clone(),
        );
        let reloads = Family::<Labels, Counter>::default();
        for result in ["success", "failure"] {
            drop(reloads.get_or_create(&vec![("result", result.to_owned())]));
        }
        registry.register(
            "config_reloads",
            "Configuration reloads by result (success, failure)",
            reloads.clone(),
        );
        let reload_failed = Gauge::default();
        registry.register(
            "config_last_reload_failed",
            "1 while the last configuration reload failed (the previous configuration is in force)",
            reload_failed.clone(),
        );
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.register("build_info", "perfpilot's version", build);
        let budgets = budgets::BudgetMetrics::register(&mut registry);

        Telemetry {
            registry,
            signals,
            families,
            virtual_memory,
            memory_limit,
            memory_usage_bytes,
            oom_kill_events,
            watch_wakes,
            watch_cadence,
            pressure,
            stall,
            uptime,
            runtime_workers,
            runtime_tasks,
            interval,
            optimizing,
            samples,
            runs,
            durations,
            levels,
            trigger_values,
            thresholds,
            forecasts,
            cooldowns,
            effectiveness,
            relief,
            predictive_runs,
            budgets,
            feed: Mutex::new(None),
            reloads,
            reload_failed,
        }
    }

    /// Metrics that follow an engine: they observe its published [`View`] and its events
    /// (samples, finished runs) — the engine does not call them. A task (ended when the engine
    /// drops its view) catches up on every published view, and every scrape catches up first,
    /// so a scrape shows everything published before it. Must be called inside a tokio
    /// runtime.
    pub fn follow(
        worker: &str,
        view: watch::Receiver<Arc<View>>,
        events: broadcast::Receiver<Event>,
    ) -> Arc<Self> {
        let telemetry = Arc::new(Telemetry::new(worker));
        let mut changes = view.clone();
        *lock(&telemetry.feed) = Some(Feed {
            view,
            events,
            last_snapshot: None,
            last_record: 0,
            strategies: Vec::new(),
            watch_wakes: Default::default(),
        });
        telemetry.catch_up();
        let follower = Arc::clone(&telemetry);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                follower.catch_up();
            }
            follower.catch_up();
        });
        telemetry
    }

    /// Observes every event and the view published since the last call.
    pub fn catch_up(&self) {
        let mut feed = lock(&self.feed);
        let Some(feed) = feed.as_mut() else {
            return;
        };
        loop {
            match feed.events.try_recv() {
                Ok(Event::MetricsUpdated(snapshot, _)) => {
                    self.observe_snapshot(&snapshot);
                    feed.last_snapshot = Some(snapshot);
                }
                Ok(Event::OomKill(kill)) => self.observe_oom_kills(kill.new_kills),
                Ok(Event::BudgetExhausted(exhaustion)) => {
                    self.observe_budget_exhausted(&exhaustion.budget)
                }
                // Runs are counted from the view's records below: a judged run's event
                // comes a settle later, and a counter should not wait for it.
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    warn!(
                        missed,
                        "metrics fell behind the engine's events: some were not counted"
                    );
                }
                Err(_) => break,
            }
        }
        let view = Arc::clone(&feed.view.borrow_and_update());
        let seen = feed
            .last_snapshot
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, &view.snapshot));
        if !seen {
            self.observe_snapshot(&view.snapshot);
            feed.last_snapshot = Some(Arc::clone(&view.snapshot));
        }
        let counted = feed.last_record;
        for record in view.recent.iter().filter(|r| r.id > counted) {
            self.observe_record(record);
            feed.last_record = feed.last_record.max(record.id);
        }
        for strategy in &view.strategies {
            self.register_strategy(&strategy.name);
            self.observe_trigger(strategy);
            if let Some(stats) = view.stats.per_strategy.get(&strategy.name) {
                self.observe_effectiveness(&strategy.name, stats);
            }
        }
        let names: Vec<String> = view.strategies.iter().map(|s| s.name.clone()).collect();
        for gone in feed.strategies.iter().filter(|name| !names.contains(name)) {
            self.forget_strategy(gone);
        }
        feed.strategies = names;
        for &(signal, how, count) in &view.watch_wakes {
            let seen = feed.watch_wakes.insert((signal, how), count).unwrap_or(0);
            self.observe_watch_wakes(signal.name(), how, count.saturating_sub(seen));
        }
        self.observe_watch_cadence(view.fast_watch.as_ref());
        for budget in &view.budgets {
            self.observe_budget(budget);
        }
        self.observe_state(view.interval.as_secs_f64(), view.is_optimizing);
    }

    /// Sets the fast watch's cadence in force per signal (`perfpilot_fast_watch_armed`).
    pub fn observe_watch_cadence(&self, status: Option<&crate::sample::WatchStatus>) {
        self.watch_cadence.clear();
        for shown in status.map(|s| s.signals.as_slice()).unwrap_or_default() {
            let labels = vec![
                ("signal", shown.signal.name().to_owned()),
                ("cadence", shown.cadence.label().to_owned()),
                ("reason", shown.cadence_reason.label().to_owned()),
            ];
            let armed = shown.cadence != crate::sample::Cadence::Disarmed;
            set(
                &self.watch_cadence,
                labels,
                Some(if armed { 1.0 } else { 0.0 }),
            );
        }
    }

    /// Sets a budget's series from its view (`perfpilot_budget_*`).
    pub fn observe_budget(&self, view: &BudgetView) {
        self.budgets.observe(view);
    }

    /// Counts an exhausted episode of `budget` (`perfpilot_budget_exhausted_total`).
    pub fn observe_budget_exhausted(&self, budget: &str) {
        self.budgets.exhausted(budget);
    }

    /// Sets every signal gauge from a sample; absent signals are removed, not zeroed.
    pub fn observe_snapshot(&self, s: &Snapshot) {
        self.samples.inc();
        for (row, family, labels) in &self.signals {
            let scale = row.metric.map_or(1.0, |m| m.scale);
            set(family, labels.clone(), (row.read)(s).map(|v| v * scale));
        }
        set(
            &self.virtual_memory,
            Vec::new(),
            s.virtual_bytes.map(|b| b as f64),
        );
        self.memory_limit.clear();
        if let (Some(limit), Some(source)) = (s.memory_limit_bytes, s.memory_limit_source) {
            let source = match source {
                MemoryLimitSource::Cgroup => "cgroup",
                MemoryLimitSource::Budget => "budget",
                MemoryLimitSource::TotalRam => "total_ram",
            };
            set(
                &self.memory_limit,
                vec![("source", source.to_owned())],
                Some(limit as f64),
            );
        }
        self.memory_usage_bytes.clear();
        if let (Some(bytes), Some(source)) = (s.memory_usage_bytes, s.memory_usage_source) {
            let source = match source {
                MemoryUsageSource::Rss => "rss",
                MemoryUsageSource::CgroupWorkingSet => "cgroup_working_set",
                MemoryUsageSource::SummedRss => "summed_rss",
            };
            set(
                &self.memory_usage_bytes,
                vec![("source", source.to_owned())],
                Some(bytes as f64),
            );
        }
        let pressure = s.pressure.as_ref();
        self.observe_pressure("system", pressure.and_then(|p| p.system.as_ref()));
        self.observe_pressure("cgroup", pressure.and_then(|p| p.cgroup.as_ref()));
        // Details in the signals' families: the allocator's other counters, the longer load
        // averages.
        if let Some(allocator) = self.families.get("allocator") {
            for (kind, value) in [
                ("allocated", s.allocator.map(|a| a.allocated_bytes)),
                ("active", s.allocator.map(|a| a.active_bytes)),
                ("retained", s.allocator.map(|a| a.retained_bytes)),
            ] {
                set(
                    allocator,
                    vec![("kind", kind.to_owned())],
                    value.map(|v| v as f64),
                );
            }
        }
        if let Some(load) = self.families.get("load_average") {
            for (index, window) in [(1, "5m"), (2, "15m")] {
                set(
                    load,
                    vec![("window", window.to_owned())],
                    s.load_average.map(|l| l[index]),
                );
            }
        }
        set(&self.uptime, Vec::new(), s.uptime.map(|u| u.as_secs_f64()));
        set(
            &self.runtime_workers,
            Vec::new(),
            s.runtime.map(|r| r.workers as f64),
        );
        set(
            &self.runtime_tasks,
            Vec::new(),
            s.runtime.map(|r| r.live_tasks as f64),
        );
    }

    /// Sets the PSI gauges and stall counters of one scope; an absent file removes its series.
    fn observe_pressure(&self, scope: &str, set_of: Option<&PressureSet>) {
        for resource in PressureResource::ALL {
            let pressure = set_of.and_then(|p| p.resource(resource));
            for (kind, kind_name) in [(PressureKind::Some, "some"), (PressureKind::Full, "full")] {
                let line = pressure.and_then(|p| p.line(kind));
                let labels = |extra: Option<&str>| {
                    let mut labels = vec![
                        ("resource", resource.name().to_owned()),
                        ("kind", kind_name.to_owned()),
                    ];
                    if let Some(window) = extra {
                        labels.push(("window", window.to_owned()));
                    }
                    labels.push(("scope", scope.to_owned()));
                    labels
                };
                for (window, value) in [
                    ("avg10", line.map(|l| l.avg10)),
                    ("avg60", line.map(|l| l.avg60)),
                    ("avg300", line.map(|l| l.avg300)),
                ] {
                    set(&self.pressure, labels(Some(window)), value);
                }
                let labels = labels(None);
                match line {
                    Some(line) => {
                        let total = line.total_us as f64 / 1e6;
                        let counter = self.stall.get_or_create(&labels).get();
                        if total < counter {
                            // The kernel's counter restarted (the cgroup was created again).
                            self.stall.remove(&labels);
                            self.stall.get_or_create(&labels).inc_by(total);
                        } else {
                            self.stall.get_or_create(&labels).inc_by(total - counter);
                        }
                    }
                    None => {
                        self.stall.remove(&labels);
                    }
                }
            }
        }
    }

    /// Sets one strategy's trigger level, value, threshold, forecast and cooldown.
    pub fn observe_trigger(&self, strategy: &StrategyView) {
        let labels = vec![("strategy", strategy.name.clone())];
        let level = match strategy.level {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
        };
        self.levels.get_or_create(&labels).set(level);
        set(&self.trigger_values, labels.clone(), strategy.value);
        set(&self.thresholds, labels.clone(), strategy.threshold);
        set(
            &self.forecasts,
            labels.clone(),
            strategy.forecast.map(|f| f.seconds),
        );
        set(
            &self.cooldowns,
            labels,
            Some(strategy.cooldown.as_secs_f64()),
        );
    }

    /// Starts a strategy's counters at zero, so `rate()` and `increase()` see its first run.
    pub fn register_strategy(&self, strategy: &str) {
        drop(
            self.predictive_runs
                .get_or_create(&vec![("strategy", strategy.to_owned())]),
        );
    }

    /// Removes the gauges of a strategy no longer registered (after a reload); its counters
    /// stay, as counters do.
    pub fn forget_strategy(&self, strategy: &str) {
        let labels = vec![("strategy", strategy.to_owned())];
        self.levels.remove(&labels);
        for gauges in [
            &self.trigger_values,
            &self.thresholds,
            &self.forecasts,
            &self.cooldowns,
            &self.effectiveness,
            &self.relief,
        ] {
            gauges.remove(&labels);
        }
    }

    /// Counts one configuration reload.
    pub fn observe_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
        self.reload_failed.set(i64::from(!success));
    }

    /// Sets a strategy's effectiveness and mean relief from its track record.
    pub fn observe_effectiveness(&self, strategy: &str, stats: &StrategyStats) {
        let labels = vec![("strategy", strategy.to_owned())];
        set(&self.effectiveness, labels.clone(), stats.effectiveness());
        set(&self.relief, labels, stats.mean_relief);
    }

    /// Sets the interval in force and whether a run is in progress.
    pub fn observe_state(&self, interval_seconds: f64, optimizing: bool) {
        self.interval.set(interval_seconds);
        self.optimizing.set(i64::from(optimizing));
    }

    /// Counts one finished run (dry runs are not counted).
    pub fn observe_record(&self, record: &OptimizationRecord) {
        if record.dry_run {
            return;
        }
        let kind = match record.kind {
            perfpilot_strategies::RunKind::Automatic => "automatic",
            perfpilot_strategies::RunKind::Manual => "manual",
        };
        let outcome = if record.success { "success" } else { "failure" };
        self.runs
            .get_or_create(&vec![
                ("strategy", record.strategy.clone()),
                ("kind", kind.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.durations
            .get_or_create(&vec![("strategy", record.strategy.clone())])
            .observe(record.duration_ms / 1000.0);
        if record.prediction.is_some() {
            self.predictive_runs
                .get_or_create(&vec![("strategy", record.strategy.clone())])
                .inc();
        }
    }

    /// Counts OOM kills the engine saw happen (the rise of the cgroup's count between two
    /// samples).
    pub fn observe_oom_kills(&self, new_kills: u64) {
        self.oom_kill_events.inc_by(new_kills);
    }

    /// Counts `wakes` immediate samples the fast watch asked for: `signal` crossed a
    /// threshold, seen by `how` (`poll` or `psi`).
    pub fn observe_watch_wakes(&self, signal: &str, how: &str, wakes: u64) {
        self.watch_wakes
            .get_or_create(&vec![
                ("signal", signal.to_owned()),
                ("how", how.to_owned()),
            ])
            .inc_by(wakes);
    }

    /// The OpenMetrics text format (`application/openmetrics-text; version=1.0.0`).
    pub fn encode_openmetrics(&self) -> Result<String, fmt::Error> {
        self.catch_up();
        let mut out = String::with_capacity(8 * 1024);
        encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The classic Prometheus text format (`text/plain; version=0.0.4`), which `promtool`
    /// and older scrapers read.
    pub fn encode_prometheus_text(&self) -> Result<String, fmt::Error> {
        Ok(openmetrics_to_prometheus_text(&self.encode_openmetrics()?))
    }
}

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4: counter families are named with
/// their `_total` suffix in `HELP`/`TYPE`, `UNIT` and `EOF` lines go, empty label sets `{}` go.
fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match descriptor {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{kind}{name}{suffix} {tail}"));
            }
            None => out.push_str(&line.replacen("{} ", " ", 1)),
        }
        out.push('\n');
    }
    out
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Observing only sets metrics; after a panic in it they are still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn set(family: &Gauges, labels: Labels, value: Option<f64>) {
    match value.filter(|v| v.is_finite()) {
        Some(value) => {
            family.get_or_create(&labels).set(value);
        }
        None => {
            family.remove(&labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use tokio::sync::{broadcast, watch};

    use perfpilot_strategies::{Pressure, PressureLine, ResourcePressure};

    use super::*;

    #[test]
    fn pressure_is_a_ratio_per_window_and_a_stall_counter_per_scope() {
        let telemetry = Telemetry::new("w");
        let line = |avg10, total_us| PressureLine {
            avg10,
            avg60: 0.25,
            avg300: 0.125,
            total_us,
            stall_rate: None,
        };
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.pressure = Some(Pressure {
            system: Some(PressureSet {
                memory: None,
                cpu: Some(ResourcePressure {
                    some: line(0.5, 2_500_000),
                    full: None,
                }),
                io: None,
            }),
            cgroup: None,
        });
        telemetry.observe_snapshot(&snapshot);
        let text = telemetry.encode_openmetrics().unwrap();
        assert!(
            text.contains(
                "perfpilot_pressure_ratio{worker=\"w\",resource=\"cpu\",kind=\"some\",window=\"avg10\",scope=\"system\"} 0.5"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "perfpilot_pressure_stall_seconds_total{worker=\"w\",resource=\"cpu\",kind=\"some\",scope=\"system\"} 2.5"
            ),
            "{text}"
        );
        assert!(!text.contains("kind=\"full\""), "absent full line: {text}");
        assert!(!text.contains("scope=\"cgroup\""), "{text}");

        // The counter follows the kernel's total, and restarts when it does.
        let cpu = |total| {
            let mut snapshot = snapshot.clone();
            let set = snapshot.pressure.as_mut().unwrap().system.as_mut().unwrap();
            set.cpu.as_mut().unwrap().some.total_us = total;
            snapshot
        };
        telemetry.observe_snapshot(&cpu(4_000_000));
        let text = telemetry.encode_openmetrics().unwrap();
        assert!(text.contains("scope=\"system\"} 4.0"), "{text}");
        telemetry.observe_snapshot(&cpu(1_000_000));
        let text = telemetry.encode_openmetrics().unwrap();
        assert!(text.contains("scope=\"system\"} 1.0"), "{text}");
        telemetry.observe_snapshot(&Snapshot::empty(SystemTime::now()));
        let text = telemetry.encode_openmetrics().unwrap();
        assert!(
            !text.contains("perfpilot_pressure_stall_seconds_total{"),
            "{text}"
        );
    }

    /// The cadence in force per watched signal, and why; a disarmed watch is 0, and a
    /// cadence that changed leaves no series behind under its old labels.
    #[test]
    fn the_fast_watch_cadence_in_force_is_a_series_per_signal_with_why() {
        use crate::sample::{ArmReason, Cadence, WatchMode, WatchStatus, WatchedSignal};
        let telemetry = Telemetry::new("w");
        let shown = |cadence, cadence_reason| WatchedSignal {
            signal: perfpilot_strategies::Signal::MemoryUsage,
            thresholds: vec![0.8, 0.95],
            interval_ms: 20,
            mode: WatchMode::Poll,
            fallback_reason: None,
            cadence,
            cadence_reason,
            cadence_why: String::new(),
            notifier: None,
            notifier_reason: None,
        };
        let status = |signals| WatchStatus {
            signals,
            wakes: 0,
            reads: 0,
        };
        telemetry.observe_watch_cadence(Some(&status(vec![shown(
            Cadence::Armed,
            ArmReason::WorstCase,
        )])));
        let text = telemetry.encode_prometheus_text().unwrap();
        assert!(
            text.contains(r#"perfpilot_fast_watch_armed{worker="w",signal="memory_usage",cadence="armed",reason="worst-case"} 1.0"#),
            "{text}"
        );
        telemetry.observe_watch_cadence(Some(&status(vec![shown(
            Cadence::Disarmed,
            ArmReason::Calm,
        )])));
        let text = telemetry.encode_prometheus_text().unwrap();
        assert!(
            text.contains(r#"perfpilot_fast_watch_armed{worker="w",signal="memory_usage",cadence="disarmed",reason="calm"} 0.0"#),
            "{text}"
        );
        assert!(!text.contains(r#"cadence="armed""#), "{text}");
    }

    /// Each rung's cost: the mean change in p99 and error rate in base units, absent for a
    /// rung with no latency reading (not 0), and the hook's reported cost as a counter by
    /// field.
    #[test]
    fn each_rungs_cost_is_a_series_per_budget_and_rung() {
        use crate::budget::cost::{RunReadings, ServiceReadings};
        use crate::budget::{Budget, BudgetConfig};
        let telemetry = Telemetry::new("w");
        let config = BudgetConfig::new(
            perfpilot_strategies::Signal::MemoryUsage,
            0.8,
            1.0,
            &["purge", "drop"],
        );
        let mut budget = Budget::new("memory", config, vec!["purge".into(), "drop".into()]);
        let at = |p99_ms, error_rate| ServiceReadings {
            p99_ms: Some(p99_ms),
            error_rate: Some(error_rate),
        };
        budget.note_run_cost(
            1,
            RunReadings {
                before: Some(at(10.0, 0.0)),
                after: Some(at(40.0, 0.25)),
            },
        );
        let report = serde_json::json!({"status": 200, "response": {"sessions_dropped": 7}});
        budget.note_reported_cost(1, report.as_object().unwrap());
        budget.note_reported_cost(1, report.as_object().unwrap());
        telemetry.observe_budget(&budget.view(std::time::Instant::now()));
        let text = telemetry.encode_prometheus_text().unwrap();
        let drop = r#"{worker="w",budget="memory",rung="1",strategy="drop"}"#;
        for line in [
            format!("perfpilot_budget_rung_mean_p99_change_seconds{drop} 0.03\n"),
            format!("perfpilot_budget_rung_mean_error_rate_change{drop} 0.25\n"),
            r#"perfpilot_budget_rung_reported_cost_total{worker="w",budget="memory",rung="1",strategy="drop",field="sessions_dropped"} 14.0"#.to_owned(),
        ] {
            assert!(text.contains(&line), "{line} in:\n{text}");
        }
        assert!(
            !text.contains(r#"perfpilot_budget_rung_mean_p99_change_seconds{worker="w",budget="memory",rung="0""#),
            "purge has no latency reading: absent, not 0:\n{text}"
        );
        assert!(
            text.contains("# TYPE perfpilot_budget_rung_reported_cost_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("field=\"status\""), "{text}");
    }

    #[test]
    fn absent_signals_are_left_out_and_present_ones_use_base_units() {
        let telemetry = Telemetry::new("edge-1");
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.rss_bytes = Some(4096);
        snapshot.uptime = Some(Duration::from_millis(1500));
        snapshot.latency = Some(perfpilot_strategies::LatencyStats {
            mean_ms: 2.0,
            p50_ms: 1.0,
            p95_ms: 5.0,
            p99_ms: 10.0,
        });
        telemetry.observe_snapshot(&snapshot);
        let text = telemetry.encode_openmetrics().unwrap();
        assert!(
            text.contains("perfpilot_resident_memory_bytes{worker=\"edge-1\"} 4096.0"),
            "{text}"
        );
        assert!(
            text.contains("perfpilot_uptime_seconds{worker=\"edge-1\"} 1.5"),
            "{text}"
        );
        assert!(
            text.contains("perfpilot_request_latency_seconds{worker=\"edge-1\",stat=\"p99\"} 0.01"),
            "{text}"
        );
        assert!(
            !text.contains("perfpilot_memory_usage_ratio{"),
            "absent, not 0:\n{text}"
        );
        assert!(text.contains("perfpilot_samples_total{worker=\"edge-1\"} 1"));
        assert!(text.contains("perfpilot_build_info{worker=\"edge-1\",version="));
        assert!(text.ends_with("# EOF\n"));

        let classic = telemetry.encode_prometheus_text().unwrap();
        assert!(
            classic.contains("# TYPE perfpilot_samples_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("\nperfpilot_resident_memory_bytes{worker=\"edge-1\"} 4096.0\n"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));

        // A signal that disappears is removed again.
        snapshot.rss_bytes = None;
        telemetry.observe_snapshot(&snapshot);
        assert!(!telemetry
            .encode_openmetrics()
            .unwrap()
            .contains("perfpilot_resident_memory_bytes{"));
    }

    #[test]
    fn every_series_in_both_formats_names_the_worker() {
        let telemetry = Telemetry::new("web-7f9c-1234");
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.rss_bytes = Some(4096);
        snapshot.load_average = Some([0.5, 0.4, 0.3]);
        telemetry.observe_snapshot(&snapshot);
        let forecast = crate::trigger::Forecast {
            at: 0.9,
            seconds: 12.0,
            slope_per_second: 0.01,
        };
        telemetry.observe_trigger(&StrategyView {
            rung_only: false,
            name: "memory-purge".to_owned(),
            aliases: Vec::new(),
            description: String::new(),
            trigger: perfpilot_strategies::TriggerSpec::new(
                perfpilot_strategies::Signal::MemoryUsage,
                0.8,
            ),
            level: Level::Warning,
            value: Some(0.85),
            consecutive_failures: 0,
            backoff_until: None,
            cooldown: Duration::from_secs(30),
            unhelpful_runs: 0,
            forecast: Some(forecast),
            threshold: Some(0.8),
        });
        let record = OptimizationRecord {
            id: 1,
            strategy: "memory-purge".to_owned(),
            kind: perfpilot_strategies::RunKind::Automatic,
            reason: "memory usage above 0.8".to_owned(),
            signal: perfpilot_strategies::Signal::MemoryUsage,
            level: Level::Warning,
            started_at: SystemTime::now(),
            duration_ms: 2.0,
            success: true,
            error: None,
            before: Some(0.85),
            after: Some(0.7),
            result: None,
            dry_run: false,
            prediction: Some(forecast.into()),
            helped: Some(true),
            budget: None,
        };
        telemetry.observe_record(&record);
        let mut history = crate::history::History::new(1);
        history.push(record);
        telemetry.observe_effectiveness(
            "memory-purge",
            &history.stats().per_strategy["memory-purge"],
        );
        for text in [
            telemetry.encode_openmetrics().unwrap(),
            telemetry.encode_prometheus_text().unwrap(),
        ] {
            let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
            assert!(series.len() > 20, "{text}");
            for line in &series {
                assert!(line.contains("worker=\"web-7f9c-1234\""), "{line}");
            }
            // The self-tuning series are there, labelled like the rest.
            for name in [
                "perfpilot_trigger_threshold{",
                "perfpilot_trigger_forecast_seconds{",
                "perfpilot_strategy_cooldown_seconds{",
                "perfpilot_strategy_effectiveness_ratio{",
                "perfpilot_strategy_mean_relief{",
                "perfpilot_predictive_optimizations_total{",
            ] {
                assert!(
                    series.iter().any(|l| l.starts_with(name)),
                    "{name} missing:\n{text}"
                );
            }
        }
    }

    /// Telemetry follows what is published (a view, events) with no engine calling it: every
    /// scrape shows what was published before it, each sample counted once.
    #[tokio::test]
    async fn following_a_published_view_and_events_counts_each_sample_once() {
        let view = |snapshot: Arc<Snapshot>, interval_ms| {
            Arc::new(View {
                sampled_at: SystemTime::now(),
                is_optimizing: true,
                ..View::of(snapshot, std::time::Duration::from_millis(interval_ms))
            })
        };
        let first = Arc::new(Snapshot::empty(SystemTime::now()));
        let (view_tx, view_rx) = watch::channel(view(Arc::clone(&first), 1000));
        let (events, _) = broadcast::channel(16);
        let telemetry = Telemetry::follow("w", view_rx, events.subscribe());
        let samples = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("perfpilot_samples_total{worker=\"w\"} "))
                .map(str::to_owned)
        };
        let text = telemetry.encode_openmetrics().unwrap();
        assert_eq!(samples(&text).as_deref(), Some("1"), "{text}");
        assert!(
            text.contains("perfpilot_optimizing{worker=\"w\"} 1"),
            "{text}"
        );

        // A new sample: its event and the view that carries it count once.
        let mut second = Snapshot::empty(SystemTime::now());
        second.rss_bytes = Some(8192);
        let second = Arc::new(second);
        events
            .send(Event::MetricsUpdated(
                Arc::clone(&second),
                Arc::new(crate::events::Evaluated::at(second.taken_at)),
            ))
            .unwrap();
        view_tx.send_replace(view(second, 2000));
        let text = telemetry.encode_openmetrics().unwrap();
        assert_eq!(samples(&text).as_deref(), Some("2"), "{text}");
        assert!(
            text.contains("perfpilot_resident_memory_bytes{worker=\"w\"} 8192.0"),
            "{text}"
        );
        assert!(
            text.contains("perfpilot_sampling_interval_seconds{worker=\"w\"} 2.0"),
            "{text}"
        );
    }
}
