use super::*;

#[test]
fn backoff_grows_with_jitter_and_caps() {
    let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 42);
    let mut prev_base = 500.0;
    for i in 0..12 {
        let d = b.next_delay().as_secs_f64() * 1000.0;
        let base: f64 = if i == 0 {
            500.0
        } else {
            (prev_base * 2.0_f64).min(30_000.0)
        };
        assert!(
            d >= base * 0.79 && d <= base * 1.21,
            "step {i}: {d} vs {base}"
        );
        prev_base = base;
    }
    b.reset();
    let d = b.next_delay();
    assert!(d >= Duration::from_millis(395) && d <= Duration::from_millis(605));
}

#[test]
fn only_the_migrated_details_mark_a_domain_as_gone_by_migration() {
    use super::events::left_by_migration;
    // SUSPENDED/MIGRATED, SUSPENDED/POSTCOPY, STOPPED/MIGRATED.
    for (event, detail) in [(3, 1), (3, 7), (5, 3)] {
        assert!(left_by_migration(event, detail), "{event}/{detail}");
    }
    // SUSPENDED/PAUSED, STOPPED/DESTROYED, STOPPED/SHUTDOWN, STARTED/MIGRATED
    // (the target side), RESUMED/MIGRATED, SUSPENDED/POSTCOPY_FAILED.
    for (event, detail) in [(3, 0), (5, 1), (5, 0), (2, 1), (4, 1), (3, 8)] {
        assert!(!left_by_migration(event, detail), "{event}/{detail}");
    }
}

#[test]
fn migration_events_name_the_end_of_a_live_migration() {
    use super::events::migration_end;
    use fenceline_proto::messages::Migration;
    assert_eq!(migration_end(2, 1), Some(Migration::Incoming)); // started/migrated
    assert_eq!(migration_end(3, 1), Some(Migration::Outgoing)); // suspended/migrated
    assert_eq!(migration_end(3, 7), Some(Migration::Outgoing)); // suspended/postcopy
    for (event, detail) in [(2, 0), (4, 1), (5, 3), (3, 0), (0, 0)] {
        assert_eq!(migration_end(event, detail), None, "{event}/{detail}");
    }
}
