//! The replay on the real engine: a run of the engine on the replay's clock with strategies
//! that really change a scripted memory signal is recorded, then replayed under the same
//! configuration (the same decisions, at the same samples) and under others.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perfpilot_strategies::{
    async_trait, Context, Outcome, Registered, Registry, Snapshot, Strategy, StrategyError,
};
use tokio_util::sync::CancellationToken;

use super::clock::ReplayClock;
use super::recording::{recorded_run, time, Cut, Recording, Sample};
use super::sweep::{load_candidate, Sweep};
use crate::engine::{spawn_on, Clock, Parts, SignalSource};
use crate::events::Event;
use crate::recorder::columns;

/// The leak bench's budget, on an invented target: what the recorded agent ran.
const CONFIG: &str = r#"
interval = "1s"

[budgets.memory]
signal = "memory_usage"
goal = 0.8
limit = 0.95
ladder = ["purge", "drop-sessions"]
settle = "1s"
calm = 2
cooldown = "5s"

[strategies.memory_purge]
enabled = false
[strategies.cache_trim]
enabled = false
[strategies.connection_reap]
enabled = false
[strategies.interval_backoff]
enabled = false

[strategies.webhook.purge]
url = "http://127.0.0.1:9/purge"

[strategies.webhook.drop-sessions]
url = "http://127.0.0.1:9/drop"
"#;

/// Memory usage that leaks `leak` per sample; `drop-sessions` halves what is above 0.4.
#[derive(Debug, Clone)]
struct Memory {
    value: Arc<Mutex<f64>>,
    leak: f64,
}

impl Memory {
    fn get(&self) -> f64 {
        *self.value.lock().expect("no panics")
    }
    fn set(&self, value: f64) {
        *self.value.lock().expect("no panics") = value;
    }
}

struct Leaking {
    memory: Memory,
    clock: Arc<ReplayClock>,
}

impl SignalSource for Leaking {
    fn sample(&mut self) -> Snapshot {
        let mut snapshot = Snapshot::empty(self.clock.wall());
        snapshot.memory_usage_ratio = Some(self.memory.get());
        snapshot
    }
}

#[derive(Debug)]
struct Acting {
    name: &'static str,
    memory: Memory,
    relief: bool,
}

#[async_trait]
impl Strategy for Acting {
    fn name(&self) -> &str {
        self.name
    }
    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        if self.relief {
            let value = self.memory.get();
            self.memory.set(0.4 + (value - 0.4) / 2.0);
        }
        Ok(Outcome::acted(self.name))
    }
}

/// Runs the real engine, its strategies acting on a leaking memory, for `samples` samples at
/// 1 s, and returns what a recorder would have kept.
async fn record(samples: usize, leak: f64) -> Recording {
    let config = load_candidate(CONFIG).expect("the test's configuration loads");
    let memory = Memory {
        value: Arc::new(Mutex::new(0.5)),
        leak,
    };
    let start = time(1_700_000_000_000);
    let clock = Arc::new(ReplayClock::at(start));
    let strategies: Vec<Registered> = config
        .strategies()
        .into_iter()
        .filter(|(enabled, _)| *enabled)
        .map(|(_, registered)| {
            let name: &'static str = match registered.strategy.name() {
                "purge" => "purge",
                "drop-sessions" => "drop-sessions",
                other => panic!("unexpected strategy {other}"),
            };
            Registered {
                strategy: Arc::new(Acting {
                    name,
                    memory: memory.clone(),
                    relief: name == "drop-sessions",
                }),
                trigger: registered.trigger,
            }
        })
        .collect();
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn_on(
        crate::reload::engine_settings(&config, None, "recorded".to_owned()),
        strategies,
        Arc::new(Registry::default()),
        Box::new(Leaking {
            memory: memory.clone(),
            clock: Arc::clone(&clock),
        }),
        shutdown.clone(),
        Parts {
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            executor: Arc::new(crate::engine::Inline),
        },
    );
    let mut events = handle.subscribe();
    let column = columns::index_of("memory_usage").expect("a memory column");
    let sample_now = |at: i64, value: f64| {
        let mut values = vec![None; columns::count()];
        values[column] = Some(value);
        Sample {
            at,
            values,
            evaluated: None,
        }
    };
    let first = super::recording::millis(start);
    let mut recorded = vec![sample_now(first, memory.get())];
    let mut runs = Vec::new();
    // Jitter as a real agent has it: each sample a few ms after its tick.
    let jitter = AtomicU64::new(0);
    for index in 1..samples {
        let extra = jitter.fetch_add(7, Ordering::Relaxed) % 40;
        let at = first + index as i64 * 1000 + extra as i64;
        let value = memory.get() + memory.leak;
        memory.set(value);
        let moves = clock.move_to(time(at));
        tokio::time::timeout(Duration::from_secs(30), clock.settled(moves))
            .await
            .expect("the engine settles within 30 s");
        recorded.push(sample_now(at, value));
        while let Ok(event) = events.try_recv() {
            if let Event::OptimizationCompleted(record) = event {
                runs.push(serde_json::to_value(&*record).expect("a record serializes"));
            }
        }
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the engine stops within 30 s")
        .expect("the engine ends cleanly");
    while let Ok(event) = events.try_recv() {
        if let Event::OptimizationCompleted(record) = event {
            runs.push(serde_json::to_value(&*record).expect("a record serializes"));
        }
    }
    let mut runs: Vec<_> = runs.iter().filter_map(recorded_run).collect();
    runs.sort_by_key(|run| run.started_at);
    Recording {
        samples: recorded,
        runs,
        episodes: Vec::new(),
        exhaustions: Vec::new(),
        wakes: Vec::new(),
        cut: Cut::End,
        agents: vec![crate::recorder::VERSION.to_owned()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_recorded_configuration_makes_the_recorded_decisions() {
    let recording = Arc::new(record(180, 0.02).await);
    assert!(
        recording.runs.len() >= 4,
        "the recorded engine climbed the ladder: {:?}",
        recording.runs
    );
    let config = load_candidate(CONFIG).expect("loads");
    let comparison = tokio::task::spawn_blocking(move || super::replay(&recording, &config))
        .await
        .expect("the replay does not panic")
        .expect("the replay runs");
    assert_eq!(
        comparison.replayed_decisions, comparison.recorded_decisions,
        "the same runs, in the same order, at the same sample"
    );
    assert_eq!((comparison.added_runs, comparison.dropped_runs), (0, 0));
    assert!(
        comparison.largest_departure < 1e-9,
        "nothing departs: {}",
        comparison.largest_departure
    );
    assert!(comparison
        .effects
        .iter()
        .any(|e| e.strategy == "drop-sessions" && e.source == "observed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_lower_goal_acts_sooner_and_more_and_a_higher_one_later_and_peaks_higher() {
    let recording = Arc::new(record(180, 0.02).await);
    let sweep = Sweep::parse("budgets.memory.goal=0.6,0.9").expect("parses");
    let candidates: Vec<_> = sweep
        .values
        .iter()
        .map(|v| sweep.candidate(CONFIG, v).expect("a valid candidate"))
        .collect();
    let results = tokio::task::spawn_blocking(move || {
        candidates
            .iter()
            .map(|config| super::replay(&recording, config).expect("the replay runs"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("no panic");
    let (low, high) = (&results[0], &results[1]);
    let first = |c: &super::Comparison| c.replayed_decisions.first().map(|d| d.sample);
    assert!(
        first(low).is_some_and(|low| first(high).is_none_or(|high| low < high)),
        "goal 0.6 acts before goal 0.9: {:?} vs {:?}",
        first(low),
        first(high)
    );
    assert!(
        low.replayed.runs > low.recorded.runs,
        "goal 0.6 runs more than the recorded 0.8: {} vs {}",
        low.replayed.runs,
        low.recorded.runs
    );
    let recorded_first = high.recorded_decisions.first().map(|d| d.sample);
    assert!(
        first(high) > recorded_first,
        "goal 0.9 acts later than the recorded 0.8:\n{high}"
    );
    assert!(
        high.replayed.peak > high.recorded.peak,
        "and lets the leak climb higher:\n{high}"
    );
    assert!(low.added_runs > 0 && low.largest_departure > 0.0);
}

#[test]
fn disruptive_is_off_by_default_and_the_sidecar_example_marks_drops_and_reaps() {
    let config = load_candidate(CONFIG).expect("loads");
    assert!(
        config.strategies.disruptive().is_empty(),
        "false by default"
    );
    let sidecar = include_str!("../../examples/sidecar.toml");
    let config = load_candidate(sidecar).expect("the sidecar example loads");
    assert_eq!(
        config.strategies.disruptive(),
        ["drop-demo-sessions", "reap-demo-connections"]
    );
}
