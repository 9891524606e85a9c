//! The sampler in a process whose global allocator is jemalloc, as in library mode.

use perfpilot::__internal::{Sampler, SamplerSettings};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[test]
fn allocator_stats_are_sampled_when_jemalloc_is_the_global_allocator() {
    let held: Vec<u8> = vec![1; 8 << 20];
    let mut sampler = Sampler::new(SamplerSettings::default());
    let stats = sampler.sample().allocator.expect("jemalloc stats");
    assert!(stats.allocated_bytes >= held.len() as u64, "{stats:?}");
    assert!(stats.active_bytes >= stats.allocated_bytes, "{stats:?}");
    assert!(stats.resident_bytes > 0, "{stats:?}");
    drop(held);
}
