//! A generated recording at 1 s, written as the agent writes it (the recorder's own window,
//! with the engine's clock on each sample, segment encoder and atomic store writer: a segment file a minute under
//! `STATE_DIR/recording/`). Shared by the examples that need hours of recording
//! (`replay_bench`, `history_bench`); included with `#[path]`.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use perfpilot::recorder::segment::{self, SegmentEntries};
use perfpilot::recorder::store::Store;
use perfpilot::recorder::window::Window;
use perfpilot_strategies::snapshot::unix_millis::millis;
use perfpilot_strategies::Snapshot;

/// Writes `seconds` samples a second apart from `start` into the state directory `dir`, each
/// made by `sample(second, at)`. Returns the bytes of the segments written.
pub fn write(
    dir: &Path,
    start: SystemTime,
    seconds: u64,
    mut sample: impl FnMut(u64, SystemTime) -> Snapshot,
) -> io::Result<usize> {
    // Kept as long as asked: nothing the store would prune is written here.
    let store = Store::open(dir, Duration::from_secs(seconds + 3600), u64::MAX)?;
    let mut window = Window::new(60_000);
    let mut bytes = 0;
    let mut write = |block: std::sync::Arc<perfpilot::recorder::window::Block>| {
        let (first, _) = block.span();
        let encoded = segment::encode(
            perfpilot::recorder::VERSION,
            &block,
            &SegmentEntries::default(),
        );
        bytes += encoded.len();
        store.write(first, &encoded)
    };
    for second in 0..seconds {
        let at = start + Duration::from_secs(second);
        // The engine evaluated it 300 µs after sampling started, as the agent records it.
        let evaluated = perfpilot::Evaluated::at(at + Duration::from_micros(300));
        if let Some(block) = window.push(millis(at) as i64, &sample(second, at), Some(&evaluated)) {
            write(block)?;
        }
    }
    if let Some(block) = window.seal() {
        write(block)?;
    }
    Ok(bytes)
}
