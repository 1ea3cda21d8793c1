//! `larder._larder`, the extension module of the `larder` Python package: the
//! library's store, directories and pools for Python, with the GIL released
//! while they do I/O or wait. The Pythonic API (context managers, paths,
//! sizes, cloud-manager's and Monolith's classes) is in `python/larder/`.

mod dirs;
mod errors;
mod home;
mod per_process;
mod pool;
mod tiers;

use pyo3::prelude::*;

#[pymodule]
mod _larder {
    use super::*;

    #[pymodule_export]
    use dirs::{Dirs, Hold};
    #[pymodule_export]
    use pool::Pools;
    #[pymodule_export]
    use tiers::Tiers;

    /// The version of larder this package is built from.
    #[pymodule_export]
    const VERSION: &str = env!("CARGO_PKG_VERSION");

    /// Coordinators this build knows (`local`, and later `redis`).
    #[pymodule_export]
    const COORDINATORS: &[&str] = home::COORDINATORS;

    /// Parses a size written for people (`20GiB`, `10GB`, `512M`, `4096`).
    #[pyfunction]
    fn parse_size(text: &str) -> PyResult<u64> {
        use errors::IntoPyResult;
        larder::size::parse_size(text).py()
    }

    /// Formats a byte count for people (`1.5 GiB`).
    #[pyfunction]
    fn format_size(bytes: u64) -> String {
        larder::size::format_size(bytes)
    }
}
