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
