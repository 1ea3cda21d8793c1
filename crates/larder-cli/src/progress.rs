//! Progress on a terminal; nothing in a pipe. A phase that lasts longer than
//! a second gets a line, whatever its size; one that ends sooner never
//! flickers. Lines fit the terminal's width.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a phase runs before it is shown.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// Draws indicatif lines on stderr when it is a terminal.
pub struct Bars {
    enabled: bool,
    current: Arc<Mutex<Option<Phase>>>,
    watching: std::sync::Once,
}

/// The phase under way.
struct Phase {
    bar: ProgressBar,
    started: Instant,
    shown: bool,
}

impl Bars {
    pub fn new() -> Bars {
        Bars {
            enabled: std::io::stderr().is_terminal(),
            current: Arc::new(Mutex::new(None)),
            watching: std::sync::Once::new(),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Phase>> {
        lock(&self.current)
    }

    /// Shows each phase once it has lasted [`SHOW_AFTER`], from one thread
    /// of its own, so that a phase that reports nothing (a wait) shows too.
    /// The thread ends with the `Bars`.
    fn watch(&self) {
        let current: Weak<Mutex<Option<Phase>>> = Arc::downgrade(&self.current);
        self.watching.call_once(|| {
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let Some(current) = current.upgrade() else { return };
                    let mut slot = lock(&current);
                    if let Some(phase) = slot.as_mut()
                        && !phase.shown
                        && phase.started.elapsed() >= SHOW_AFTER
                    {
                        phase.bar.set_draw_target(ProgressDrawTarget::stderr());
                        phase.bar.enable_steady_tick(Duration::from_millis(200));
                        phase.shown = true;
                    }
                }
            });
        });
    }
}

fn lock(m: &Mutex<Option<Phase>>) -> std::sync::MutexGuard<'_, Option<Phase>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lines for a phase. With a known total: its label, then a bar, the
/// bytes, the rate and the time left; without: a spinner, the label, the
/// bytes so far and the time spent. Wide parts take what the terminal's width
/// leaves, and long labels are cut to fit.
fn style(total: Option<u64>) -> ProgressStyle {
    let template = match total {
        Some(_) => {
            "{wide_msg}\n[{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}"
        }
        None => "{spinner} {wide_msg} {binary_bytes} {elapsed}",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl larder::Progress for Bars {
    fn start(&self, label: &str, total: Option<u64>) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
        bar.set_style(style(total));
        bar.set_message(label.to_string());
        let previous = self.slot().replace(Phase { bar, started: Instant::now(), shown: false });
        if let Some(previous) = previous
            && previous.shown
        {
            previous.bar.finish_and_clear();
        }
        self.watch();
    }

    fn advance(&self, amount: u64) {
        if let Some(phase) = self.slot().as_ref() {
            phase.bar.inc(amount);
        }
    }

    fn skip_to(&self, done: u64) {
        if let Some(phase) = self.slot().as_ref() {
            // Bytes done before we looked are not a rate: the estimate
            // takes them as its starting point (tick records the position),
            // then starts afresh from there.
            phase.bar.set_position(done);
            phase.bar.tick();
            phase.bar.reset_eta();
        }
    }

    fn finish(&self) {
        if let Some(phase) = self.slot().take()
            && phase.shown
        {
            phase.bar.finish_and_clear();
        }
    }
}
