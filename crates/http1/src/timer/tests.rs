//! The timer's tests run on tokio's paused clock: `advance` moves it, and the
//! ticks read it, so no test sleeps.

use super::*;

/// Moves the paused clock on by `ms` milliseconds.
async fn advance(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
}

/// Polls `fut` once, with a waker that counts its wakes.
fn poll_once<F: Future + Unpin>(fut: &mut F, wakes: &Arc<Wakes>) -> Poll<F::Output> {
    let waker = Waker::from(Arc::clone(wakes));
    Pin::new(fut).poll(&mut Context::from_waker(&waker))
}

#[derive(Default)]
struct Wakes(AtomicU64);

impl std::task::Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Relaxed);
    }
}

#[tokio::test(start_paused = true)]
async fn a_sleep_ends_at_the_first_tick_after_its_deadline() {
    let timer = CoarseTimer::new();
    let wakes = Arc::new(Wakes::default());
    let mut sleep = timer.sleep_until(Instant::now() + Duration::from_millis(30));
    assert!(poll_once(&mut sleep, &wakes).is_pending());
    timer.tick();
    assert_eq!(wakes.0.load(Relaxed), 0, "woken before its deadline");
    advance(40).await;
    assert!(
        poll_once(&mut sleep, &wakes).is_pending(),
        "no tick yet: the clock has not moved"
    );
    timer.tick();
    assert_eq!(wakes.0.load(Relaxed), 1);
    assert!(poll_once(&mut sleep, &wakes).is_ready());
    timer.tick();
    assert_eq!(wakes.0.load(Relaxed), 1, "woken once");
}

#[tokio::test(start_paused = true)]
async fn dropped_sleeps_give_their_slot_back_and_are_never_woken() {
    let timer = CoarseTimer::new();
    let wakes = Arc::new(Wakes::default());
    let mut first = timer.sleep_until(Instant::now() + Duration::from_millis(1));
    assert!(poll_once(&mut first, &wakes).is_pending());
    drop(first);
    let later = Arc::new(Wakes::default());
    let mut second = timer.sleep_until(Instant::now() + Duration::from_secs(60));
    assert!(poll_once(&mut second, &later).is_pending());
    assert_eq!(lock(&timer.shared.sleepers).slots.len(), 1, "slot reused");
    advance(5).await;
    timer.tick();
    assert_eq!(wakes.0.load(Relaxed), 0, "a dropped sleep was woken");
    assert_eq!(later.0.load(Relaxed), 0, "woken before its deadline");
}

#[tokio::test(start_paused = true)]
async fn a_reset_sleep_waits_for_its_new_deadline() {
    let timer = CoarseTimer::new();
    let wakes = Arc::new(Wakes::default());
    let mut sleep = timer.sleep_until(Instant::now() + Duration::from_millis(1));
    assert!(poll_once(&mut sleep, &wakes).is_pending());
    sleep.reset(Instant::now() + Duration::from_secs(60));
    assert!(poll_once(&mut sleep, &wakes).is_pending());
    advance(5).await;
    timer.tick();
    assert_eq!(wakes.0.load(Relaxed), 0, "woken at the old deadline");
    assert!(poll_once(&mut sleep, &wakes).is_pending());
    sleep.reset(Instant::now());
    advance(2).await;
    timer.tick();
    assert!(poll_once(&mut sleep, &wakes).is_ready());
    assert_eq!(
        lock(&timer.shared.sleepers).slots.len(),
        1,
        "one slot throughout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_ends_what_takes_too_long() {
    let timer = CoarseTimer::new();
    let ticker = {
        let timer = timer.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                timer.tick();
            }
        })
    };
    let within = |limit| after(Instant::now(), limit);
    let never = std::future::pending::<()>();
    let began = Instant::now();
    assert_eq!(
        timer
            .timeout_at(within(Duration::from_millis(50)), never)
            .await,
        Err(Elapsed)
    );
    // Never early, and at most a tick late.
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(50) && took <= Duration::from_millis(60),
        "{took:?}"
    );
    assert_eq!(
        timer
            .timeout_at(within(Duration::from_secs(60)), async { 7 })
            .await,
        Ok(7)
    );
    assert_eq!(
        timer.timeout_at(within(Duration::MAX), async { 8 }).await,
        Ok(8)
    );
    ticker.abort();
}
