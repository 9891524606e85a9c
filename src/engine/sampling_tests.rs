//! The sample runs off the runtime's workers: a sample that blocks leaves them free.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use super::*;

/// A source whose second sample blocks until the test opens the gate (or 30 s pass).
struct Gated {
    calls: u32,
    entered: mpsc::Sender<()>,
    gate: mpsc::Receiver<()>,
    finished: Arc<AtomicBool>,
}

impl SignalSource for Gated {
    fn sample(&mut self) -> Snapshot {
        self.calls += 1;
        if self.calls == 2 {
            let _ = self.entered.send(());
            let _ = self.gate.recv_timeout(Duration::from_secs(30));
            self.finished.store(true, Ordering::SeqCst);
        }
        Snapshot::empty(SystemTime::now())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_blocked_sample_leaves_the_only_runtime_thread_free() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let source = Gated {
        calls: 0,
        entered: entered_tx,
        gate: gate_rx,
        finished: Arc::clone(&finished),
    };
    let mut settings = EngineSettings::for_tests();
    settings.interval = IntervalControl::new(Duration::from_millis(10), Duration::from_millis(80));
    let shutdown = CancellationToken::new();
    let (_handle, task) = spawn(
        settings,
        Vec::new(),
        Arc::new(Registry::default()),
        Box::new(source),
        shutdown.clone(),
    );
    // Wait on the runtime (so that it runs the engine) until the tick's sample blocks.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while entered_rx.try_recv().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the engine did not take a second sample within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // This task runs on the runtime's only thread while the sample is still blocked.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "the blocked sample held the runtime's only thread"
    );
    gate_tx.send(()).unwrap();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the engine stops within 30 s")
        .unwrap();
}
