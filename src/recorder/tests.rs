//! The recorder following a real engine: a scripted memory signal over a budget whose rung
//! lowers it, on tokio's paused clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use perfpilot_strategies::{
    Context, Outcome, Registered, Registry, Strategy, StrategyError, TriggerSpec,
};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::budget::BudgetConfig;
use crate::engine::{spawn, EngineSettings, SignalSource};

/// Memory usage set by the test and the rung; every sample is stamped one second after the
/// last, from the whole second the test started in, so the recorded times are known.
#[derive(Clone)]
struct Scripted {
    usage: Arc<Mutex<f64>>,
    samples: Arc<AtomicU32>,
    start_ms: u64,
}

impl Scripted {
    fn new(usage: f64) -> Self {
        Scripted {
            usage: Arc::new(Mutex::new(usage)),
            samples: Arc::default(),
            start_ms: millis(SystemTime::now()) / 1000 * 1000,
        }
    }
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripted")
    }
}

impl SignalSource for Scripted {
    fn sample(&mut self) -> Snapshot {
        let n = self.samples.fetch_add(1, Ordering::SeqCst);
        let at = UNIX_EPOCH + Duration::from_millis(self.start_ms + u64::from(n) * 1000);
        let mut snapshot = Snapshot::empty(at);
        snapshot.memory_usage_ratio = Some(*self.usage.lock().unwrap());
        snapshot
    }
}

#[derive(Debug)]
struct Lower(Arc<Mutex<f64>>);

#[async_trait]
impl Strategy for Lower {
    fn name(&self) -> &str {
        "lower"
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        *self.0.lock().unwrap() = 0.5;
        Ok(Outcome::acted("lowered"))
    }
}

/// Takes three seconds (of the paused clock) and then lowers the usage.
#[derive(Debug)]
struct SlowLower(Arc<Mutex<f64>>);

#[async_trait]
impl Strategy for SlowLower {
    fn name(&self) -> &str {
        "slow-lower"
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        tokio::time::sleep(Duration::from_secs(3)).await;
        *self.0.lock().unwrap() = 0.5;
        Ok(Outcome::acted("lowered, slowly"))
    }
}

/// Waits (at most 100 published views) until `done` holds.
async fn wait_for(
    recorder: &Recorder,
    view: &watch::Receiver<Arc<View>>,
    what: &str,
    done: impl Fn(&Recorder) -> bool,
) {
    let mut view = view.clone();
    for _ in 0..100 {
        if done(recorder) {
            return;
        }
        tokio::time::timeout(Duration::from_secs(5), view.changed())
            .await
            .expect("the engine publishes a view every second")
            .expect("the engine runs");
    }
    let e = recorder.excerpt(UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(1 << 40));
    panic!(
        "waited 100 views for {what}: {} samples, episodes {:?}, runs {:?}, budgets {:?}",
        recorder.samples(),
        e.episodes,
        e.runs,
        view.borrow().budgets
    );
}

#[tokio::test(start_paused = true)]
async fn records_samples_runs_with_their_verdict_and_the_episode_from_start_to_end() {
    let source = Scripted::new(0.6);
    let mut settings = EngineSettings::for_tests();
    let mut budget = BudgetConfig::new(Signal::MemoryUsage, 0.8, 0.95, &["lower"]);
    budget.calm = 2;
    settings.budgets = vec![("memory".to_owned(), budget)];
    settings.rung_only = vec!["lower".to_owned()];
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (engine, _task) = spawn(
        settings,
        vec![Registered {
            strategy: Arc::new(Lower(Arc::clone(&source.usage))),
            trigger: TriggerSpec::new(Signal::MemoryUsage, 0.9),
        }],
        Arc::new(Registry::default()),
        Box::new(source.clone()),
        shutdown,
    );
    let recorder = Recorder::new(&RecorderConfig::default()).follow(&engine, None);

    let view = engine.watch();
    wait_for(&recorder, &view, "three samples", |r| r.samples() >= 3).await;
    *source.usage.lock().unwrap() = 0.9;
    let everything = || recorder.excerpt(UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(1 << 40));
    wait_for(
        &recorder,
        &view,
        "the episode to end and its run judged",
        |r| {
            let e = r.excerpt(UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(1 << 40));
            e.episodes.iter().any(|e| e.end.is_some())
                && e.runs.iter().any(|r| r["helped"].is_boolean())
        },
    )
    .await;

    let excerpt = everything();
    assert_eq!(excerpt.episodes.len(), 1, "{:?}", excerpt.episodes);
    let episode = &excerpt.episodes[0];
    assert_eq!((episode.budget.as_str(), episode.episode), ("memory", 1));
    assert!(episode.end.expect("ended") > episode.start, "{episode:?}");
    assert_eq!(excerpt.runs.len(), 1, "{:?}", excerpt.runs);
    let run = &excerpt.runs[0];
    assert_eq!(run["strategy"], "lower");
    assert_eq!(
        run["helped"], true,
        "the judged record replaced the first: {run:?}"
    );
    assert_eq!(
        excerpt.bands,
        [Band {
            name: "memory".to_owned(),
            signal: Signal::MemoryUsage,
            goal: 0.8,
            limit: 0.95
        }]
    );

    // Every sample the engine took, at its time, with its value, in order.
    let usage = columns::index_of("memory_usage").expect("a column");
    let rows: Vec<Row> = excerpt
        .blocks
        .iter()
        .flat_map(|b| b.rows().collect::<Vec<_>>())
        .collect();
    let taken = source.samples.load(Ordering::SeqCst) as usize;
    assert!(
        rows.len() + 1 >= taken && rows.len() <= taken,
        "{} rows, {taken} samples",
        rows.len()
    );
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row.time as u64, source.start_ms + n as u64 * 1000);
    }
    let values: Vec<f64> = rows.iter().filter_map(|r| r.values[usage]).collect();
    assert!(
        values.contains(&0.9) && values.ends_with(&[0.5]),
        "{values:?}"
    );
}

/// OOM kills and exhausted ladders go into the segments as well as the memory: a replay cuts
/// a recording at its first OOM kill and counts its exhaustions.
/// A run the shutdown lets finish is published as the engine ends; the recorder's follower
/// has recorded it once [`Recorder::followed`] returns, so the agent's last segment has it.
/// (On this single-threaded runtime the follower happens to run before the engine's task is
/// seen to end even without the wait; on the agent's multi-threaded runtime it need not.)
#[tokio::test(start_paused = true)]
async fn a_run_the_shutdown_lets_finish_is_recorded_once_the_follower_is_waited_for() {
    let source = Scripted::new(0.95);
    let shutdown = CancellationToken::new();
    let (engine, task) = spawn(
        EngineSettings::for_tests(),
        vec![Registered {
            strategy: Arc::new(SlowLower(Arc::clone(&source.usage))),
            trigger: TriggerSpec::new(Signal::MemoryUsage, 0.9),
        }],
        Arc::new(Registry::default()),
        Box::new(source.clone()),
        shutdown.clone(),
    );
    let recorder = Recorder::new(&RecorderConfig::default()).follow(&engine, None);
    let mut view = engine.watch();
    for _ in 0..100 {
        if view.borrow_and_update().is_optimizing {
            break;
        }
        tokio::time::timeout(Duration::from_secs(5), view.changed())
            .await
            .expect("the engine publishes a view every second")
            .expect("the engine runs");
    }
    assert!(
        view.borrow().is_optimizing,
        "waited 100 views for slow-lower to start"
    );

    shutdown.cancel();
    task.await.expect("the engine ends");
    assert!(recorder.followed(Duration::from_secs(5)).await);
    let excerpt = recorder.excerpt(UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(1 << 40));
    assert!(
        excerpt
            .runs
            .iter()
            .any(|run| run["strategy"] == "slow-lower"),
        "the run finished at shutdown is recorded: {:?}",
        excerpt.runs
    );
}

#[tokio::test]
async fn oom_kills_and_exhaustions_go_into_the_next_segment() {
    let (events, _) = broadcast::channel(8);
    let snapshot = Arc::new(Snapshot::empty(UNIX_EPOCH + Duration::from_secs(1_000)));
    let (_view_tx, view) = watch::channel(Arc::new(View::of(snapshot, Duration::from_secs(1))));
    let recorder = Recorder::new(&RecorderConfig::default());
    let mut follower = Follower {
        recorder: recorder.clone(),
        events: events.subscribe(),
        view,
        reloader: None,
        last_snapshot: None,
        episodes: BTreeMap::new(),
        wakes: BTreeMap::new(),
        reloads: None,
        last_run: 0,
    };
    let kill = crate::events::OomKill {
        new_kills: 1,
        oom_kills: 1,
        timestamp: 1_000_000,
        memory_usage_before: Some(0.99),
        memory_limit_bytes: Some(1 << 28),
    };
    let exhaustion = crate::budget::Exhaustion {
        budget: "memory".to_owned(),
        episode: 1,
        value: 1.2,
        limit: 1.0,
        at: UNIX_EPOCH + Duration::from_secs(1_000),
        message: "every rung tried".to_owned(),
    };
    events.send(Event::OomKill(kill)).expect("a receiver");
    events
        .send(Event::BudgetExhausted(Arc::new(exhaustion)))
        .expect("a receiver");
    follower.catch_up();
    let pending = recorder.lock().log.take_pending();
    assert_eq!(pending.oom_kills.len(), 1, "{pending:?}");
    assert_eq!(pending.oom_kills[0]["timestamp"], 1_000_000);
    assert_eq!(pending.exhaustions.len(), 1, "{pending:?}");
    assert_eq!(pending.exhaustions[0]["budget"], "memory");
}

#[test]
fn a_window_shorter_than_a_minute_or_no_history_request_is_refused_naming_the_key() {
    let config = RecorderConfig {
        window: Duration::from_secs(10),
        max_history_requests: 0,
        ..RecorderConfig::default()
    };
    let problems: Vec<String> = config.problems().iter().map(ToString::to_string).collect();
    assert!(
        problems[0].starts_with("recorder.window = 10s: must be in 60s..=86400s"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("recorder.max_history_requests = 0"),
        "{problems:?}"
    );
}
