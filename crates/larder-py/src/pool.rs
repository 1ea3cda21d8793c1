//! `_larder.Pools`: compute pools, instances held by the Python process.
//! The package's `larder.pool.acquire` wraps it.

use std::collections::BTreeMap;
use std::time::Duration;

use pyo3::prelude::*;

use larder::pool::Acquire;

use crate::errors::IntoPyResult;
use crate::home;
use crate::per_process::PerProcess;

/// The compute pools of a larder home.
#[pyclass(frozen, module = "larder._larder")]
pub struct Pools {
    handle: PerProcess<larder::pool::Pools>,
}

/// An instance handed out.
#[derive(IntoPyObject)]
pub struct InstanceOut {
    name: String,
    source: String,
    concurrency: u32,
    new: bool,
}

/// What runs a command on an instance: program, arguments and environment.
#[derive(IntoPyObject)]
pub struct CommandOut {
    program: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

#[pymethods]
impl Pools {
    #[new]
    #[pyo3(signature = (home=None))]
    fn new(py: Python<'_>, home: Option<std::path::PathBuf>) -> PyResult<Pools> {
        py.detach(|| {
            let config = home::config(home, None)?;
            let pools = home::open_pools(&config)?;
            let reopen = move || home::open_pools(&config);
            Ok::<_, larder::Error>(Pools {
                handle: PerProcess::opened("pool handle", pools, reopen),
            })
        })
        .py()
    }

    /// Acquires `count` instances of `source` for this process, all or none,
    /// waiting up to `wait` seconds for room (none: fail at once).
    #[pyo3(signature = (source, count=1, wait=None))]
    fn acquire(
        &self,
        py: Python<'_>,
        source: String,
        count: usize,
        wait: Option<f64>,
    ) -> PyResult<Vec<InstanceOut>> {
        let wait = wait.map(|s| Duration::from_secs_f64(s.max(0.0)));
        let got = py
            .detach(|| {
                let request = Acquire { source, count, holder: home::holder(), wait };
                self.handle.get()?.acquire(&request)
            })
            .py()?;
        Ok(got
            .into_iter()
            .map(|a| InstanceOut {
                name: a.name,
                source: a.source,
                concurrency: a.concurrency,
                new: a.new,
            })
            .collect())
    }

    /// Releases instances: cached up to the reserve, else thrown away
    /// (always with `discard`).
    #[pyo3(signature = (names, discard=false))]
    fn release(&self, py: Python<'_>, names: Vec<String>, discard: bool) -> PyResult<()> {
        py.detach(|| self.handle.get()?.release(&names, discard).map(|_| ())).py()
    }

    /// What runs `argv` on the instance `name` (a shell if empty).
    fn command(&self, py: Python<'_>, name: String, argv: Vec<String>) -> PyResult<CommandOut> {
        let cmd = py.detach(|| self.handle.get()?.command(&name, &argv)).py()?;
        let text = |s: &std::ffi::OsStr| s.to_string_lossy().into_owned();
        Ok(CommandOut {
            program: text(cmd.get_program()),
            args: cmd.get_args().map(text).collect(),
            env: cmd.get_envs().filter_map(|(k, v)| Some((text(k), text(v?)))).collect(),
        })
    }
}
