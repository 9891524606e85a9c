//! tokio runtime metrics of the runtime the sampler was created in, through
//! [`tokio_metrics::RuntimeMonitor`] (stable tokio: no `tokio_unstable` needed).

use perfpilot_strategies::RuntimeStats;
use tokio_metrics::{RuntimeIntervals, RuntimeMetrics, RuntimeMonitor};

/// Turns the runtime's cumulative counters into per-window [`RuntimeStats`].
#[derive(Debug)]
pub(crate) struct RuntimeSampler {
    intervals: RuntimeIntervals,
}

impl RuntimeSampler {
    /// Watches the runtime the caller runs in; `None` outside a tokio runtime.
    pub(crate) fn current() -> Option<Self> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        Some(RuntimeSampler {
            intervals: RuntimeMonitor::new(&handle).intervals(),
        })
    }

    /// The metrics of the window since the previous call (the first window starts at
    /// [`RuntimeSampler::current`]).
    pub(crate) fn sample(&mut self) -> Option<RuntimeStats> {
        runtime_stats(&self.intervals.next()?)
    }
}

/// Our view of one tokio-metrics interval; `None` for an empty window or a runtime without
/// workers, where no busy ratio exists.
fn runtime_stats(metrics: &RuntimeMetrics) -> Option<RuntimeStats> {
    let workers = metrics.workers_count;
    // tokio-metrics' own `busy_ratio()` is per runtime (up to `workers`); ours is per worker.
    let capacity = metrics.elapsed.as_secs_f64() * workers as f64;
    if capacity <= 0.0 {
        return None;
    }
    let busy_ratio = (metrics.total_busy_duration.as_secs_f64() / capacity).clamp(0.0, 1.0);
    Some(RuntimeStats {
        workers: workers as u64,
        busy_ratio,
        global_queue_depth: metrics.global_queue_depth as u64,
        live_tasks: metrics.live_tasks_count as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_ratio_is_per_worker_and_clamped() {
        let mut metrics = RuntimeMetrics::default();
        metrics.workers_count = 4;
        metrics.elapsed = std::time::Duration::from_secs(1);
        metrics.total_busy_duration = std::time::Duration::from_secs(1);
        metrics.global_queue_depth = 7;
        metrics.live_tasks_count = 12;
        let stats = runtime_stats(&metrics).unwrap();
        assert_eq!(stats.busy_ratio, 0.25);
        assert_eq!(
            (stats.workers, stats.global_queue_depth, stats.live_tasks),
            (4, 7, 12)
        );
        metrics.total_busy_duration = std::time::Duration::from_secs(5);
        assert_eq!(runtime_stats(&metrics).unwrap().busy_ratio, 1.0);
        metrics.elapsed = std::time::Duration::ZERO;
        assert_eq!(runtime_stats(&metrics), None);
    }

    #[test]
    fn outside_a_runtime_there_is_nothing_to_watch() {
        assert!(RuntimeSampler::current().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inside_a_runtime_each_sample_covers_a_window() {
        let mut sampler = RuntimeSampler::current().unwrap();
        let tasks: Vec<_> = (0..3)
            .map(|_| tokio::spawn(std::future::pending::<()>()))
            .collect();
        let stats = sampler.sample().unwrap();
        assert_eq!(stats.workers, 2);
        assert!((0.0..=1.0).contains(&stats.busy_ratio));
        assert!(stats.live_tasks >= 3, "{stats:?}");
        for task in tasks {
            task.abort();
        }
    }
}
