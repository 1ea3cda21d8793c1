//! Progress bars on a terminal; nothing in a pipe.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Below this many bytes a bar would only flicker.
const WORTH_A_BAR: u64 = 32 << 20;

/// Draws an indicatif bar on stderr when it is a terminal.
pub struct Bars {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub fn new() -> Bars {
        Bars { enabled: std::io::stderr().is_terminal(), bar: Mutex::new(None) }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl larder::Progress for Bars {
    fn start(&self, label: &str, total: Option<u64>) {
        if !self.enabled || total.is_some_and(|t| t < WORTH_A_BAR) {
            return;
        }
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = if total.is_some() {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else {
            "{msg} {bytes} {bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let label: String = label.chars().take(64).collect();
        bar.set_message(label);
        *self.slot() = Some(bar);
    }

    fn advance(&self, amount: u64) {
        if let Some(bar) = self.slot().as_ref() {
            bar.inc(amount);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.slot().take() {
            bar.finish_and_clear();
        }
    }
}
