//! Expired entries are reclaimed: a stream of unique short-lived keys must
//! not grow the table without bound.

use bext_locking::LockingPlugin;
use bext_locking_memory::MemoryPlugin;

#[test]
fn a_million_unique_short_ttl_keys_stay_bounded() {
    let plugin = MemoryPlugin::default();
    let mut peak = 0;
    for round in 0..100 {
        for i in 0..10_000 {
            let handle = plugin.try_lock(&format!("job/{round}/{i}"), 1).unwrap();
            assert!(handle.is_some());
        }
        // Let this round's 1 ms leases run out before the next round.
        std::thread::sleep(std::time::Duration::from_millis(2));
        peak = peak.max(plugin.store_len());
    }
    // Without reclaiming, a million entries would remain. With it, each
    // shard holds at most about twice one round's share.
    assert!(peak < 40_000, "table grew to {peak} entries");
}

#[test]
fn fences_keep_rising_across_reclaimed_keys() {
    let plugin = MemoryPlugin::default();
    let first = plugin.try_lock("k", 1).unwrap().unwrap().fence.unwrap();
    for i in 0..20_000 {
        plugin.try_lock(&format!("filler/{i}"), 1).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(2));
    for i in 0..20_000 {
        plugin.try_lock(&format!("more/{i}"), 1).unwrap();
    }
    let again = plugin.try_lock("k", 1).unwrap().unwrap().fence.unwrap();
    assert!(again > first, "fence went from {first} to {again}");
}
