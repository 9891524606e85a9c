//! `perfpilot run`: load config, start logging and the runtime, serve until a signal.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::ConfigArgs;
use crate::config::{Config, LogConfig, LogFormat};
use crate::reload::{ConfigSource, Reloader};
use crate::Agent;

/// Runs the agent until SIGTERM or SIGINT; SIGHUP reloads the configuration.
pub fn run(args: &ConfigArgs) -> Result<(), String> {
    // Validation has already refused a non-loopback listen address without a token.
    let source = args.source();
    let config = source.load().map_err(|e| e.to_string())?.config;
    init_logging(&config.log)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // One worker (and the blocking pool, where purge and trim run): the agent's own work is a
    // sample per interval and its API. Measured on 2 cores shared with `wrk -t2 -c32` on
    // /performance-metrics (20 s runs), two workers gave no more requests/s (111–117k either
    // way) and a worse p99 (1.9–2.6 ms against 0.8–2.3 ms), and would compete with the
    // service the agent watches.
    // TOKIO_WORKER_THREADS still chooses another count.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = builder
        .enable_all()
        .thread_name("perfpilot")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(serve(config, source));
    // A strategy abandoned after the grace period may still hold a blocking thread.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn init_logging(log: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            log_filter(&directives).map_err(|e| format!("RUST_LOG = {directives:?}: {e}"))?
        }
        _ => log_filter(&log.level).map_err(|e| format!("log.level = {:?}: {e}", log.level))?,
    };
    // The builder filters at INFO by default: let every level through to `filter`.
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(log_colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ));
    match log.format {
        LogFormat::Text => builder.finish().with(filter).try_init(),
        LogFormat::Json => builder.json().finish().with(filter).try_init(),
    }
    .map_err(|e| format!("cannot set up logging: {e}"))
}

/// A log filter written as `RUST_LOG` and `log.level` are: a level (`warn`), and targets with
/// their level (`info,perfpilot::recorder=debug`). tracing's `Targets`, not its `EnvFilter`:
/// span and field filters are not needed here, and `EnvFilter`'s regular expressions would add
/// about 200 KB of code to the binary (code pages are most of an idle agent's RSS).
fn log_filter(directives: &str) -> Result<Targets, String> {
    directives.parse::<Targets>().map_err(|e| e.to_string())
}

/// Whether log lines get ANSI colours: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>). A file or a pipe gets plain text.
fn log_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

async fn serve(config: Config, source: ConfigSource) -> Result<(), String> {
    let stop = StopSignal::install();
    let hangup = reload_on_hangup();
    let listen = config.api.listen;
    let api_enabled = config.api.enabled;
    let grace = config.shutdown_grace;
    let listener = if api_enabled {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen} (api.listen): {e}"))?;
        Some(listener)
    } else {
        None
    };
    let agent = start_agent(config, source)?;
    hangup.serve(agent.reloader(), agent.shutdown_token());
    match listener {
        Some(listener) => {
            let local = listener
                .local_addr()
                .map_err(|e| format!("cannot read the listening address: {e}"))?;
            // The first line on stdout, for scripts and tests that listen on port 0.
            println!("listening on http://{local}");
            info!(%local, "perfpilot API listening");
            agent
                .serve(listener, stop.received(), grace)
                .await
                .map_err(|e| format!("HTTP server failed: {e}"))?;
        }
        None => {
            info!("HTTP API disabled (api.enabled = false)");
            stop.received().await;
            agent.shutdown_within(grace).await;
        }
    }
    info!("stopped");
    Ok(())
}

/// Builds and starts the agent on a short-lived thread inside the runtime. Building it
/// (strategies, sampler, engine, recorder) takes about 60 KiB of stack once: on the main
/// thread those pages would stay resident for the agent's whole life, while a thread that
/// ends gives its stack back (glibc releases an exited thread's stack pages).
fn start_agent(config: Config, source: ConfigSource) -> Result<Agent, String> {
    let runtime = tokio::runtime::Handle::current();
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("perfpilot-start".into())
            .spawn_scoped(scope, move || {
                let _inside = runtime.enter();
                Agent::with_config(config)
                    .config_source(source)
                    .spawn()
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from the moment it is installed, so a signal
/// that arrives while the agent starts up is not lost (nor kills it uncleanly).
struct StopSignal {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignal {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            StopSignal {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignal {}
    }

    /// Resolves on the first of the signals.
    async fn received(mut self) {
        #[cfg(unix)]
        {
            let terminate = async {
                match self.terminate.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let interrupt = async {
                match self.interrupt.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            tokio::select! {
                _ = terminate => {}
                _ = interrupt => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGHUP, listened for from the start (its default action would end the agent), each one a
/// configuration reload once the agent runs.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

fn reload_on_hangup() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let signal = signal(SignalKind::hangup())
            .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP: reload with POST /config/reload"))
            .ok();
        Hangup { signal }
    }
    #[cfg(not(unix))]
    Hangup {}
}

impl Hangup {
    /// Reloads on every SIGHUP until `shutdown` is cancelled. The outcome is logged by the
    /// reloader (and a failure shown in `/performance-metrics`).
    fn serve(self, reloader: Arc<Reloader>, shutdown: CancellationToken) {
        #[cfg(unix)]
        if let Some(mut signal) = self.signal {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        received = signal.recv() => {
                            if received.is_none() {
                                return;
                            }
                            info!("SIGHUP: reloading the configuration");
                            let _ = reloader.reload("SIGHUP").await;
                        }
                    }
                }
            });
        }
        #[cfg(not(unix))]
        drop((reloader, shutdown));
    }
}

#[cfg(test)]
mod tests {
    use super::log_colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(
            log_colour(true, Some("".into())),
            "an empty NO_COLOR is unset"
        );
        assert!(!log_colour(true, Some("1".into())));
        assert!(!log_colour(false, None), "a file or a pipe");
    }
}
