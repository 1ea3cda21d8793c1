//! When the served folder is scanned: before the first request, every
//! `--rescan`, and whenever a request finds it changed (see
//! [`larder::pypi::folder`]).

use std::sync::Arc;

use larder::pypi::folder::Scan;

use super::PypiState;

/// Rescans the served folder if it looks changed (`force`: in any case),
/// one scan at a time: those who waited for one do not scan again. Returns
/// what the scan did, if one ran.
pub async fn refresh(state: &Arc<PypiState>, force: bool) -> Option<Scan> {
    let folder = state.folder.as_ref()?;
    if !force && !folder.looks_changed() {
        return None;
    }
    let _one = state.scanning.lock().await;
    if !force && !folder.looks_changed() {
        return None;
    }
    let pypi = state.clone();
    let scanned = state
        .core
        .pool
        .run(move |store| match &pypi.folder {
            Some(folder) => folder.scan(store, &pypi.index),
            None => Ok(Scan::default()),
        })
        .await;
    match scanned {
        Ok(s) => {
            if s.added + s.removed > 0 {
                tracing::info!("indexed {} packages, dropped {}", s.added, s.removed);
                state.changed();
            }
            Some(s)
        }
        Err(e) => {
            tracing::warn!("indexing {}: {e}", folder.root().display());
            None
        }
    }
}
