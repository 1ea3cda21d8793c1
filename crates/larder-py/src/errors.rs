//! The library's errors as the Python package's exception classes. The
//! classes are defined in Python (`larder/_errors.py`), where an exception can
//! also be a `KeyError` or a `PermissionError`; this maps each `ErrorKind`
//! to one of them, with the library's one-line message.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

use larder::{Error, ErrorKind};

/// The class name in `larder._errors` for each kind.
fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "NotFound",
        ErrorKind::InvalidInput => "InvalidInput",
        ErrorKind::Config => "ConfigError",
        ErrorKind::Corrupt => "CorruptData",
        ErrorKind::StoreFull | ErrorKind::DiskFull => "NoRoom",
        ErrorKind::PermissionDenied => "PermissionDenied",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::Busy => "Busy",
        ErrorKind::Io => "Error",
    }
}

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The command line's options that the library's messages name as a fix,
/// and the arguments that are the same fix from Python.
const OPTIONS_AS_ARGUMENTS: [(&str, &str); 3] =
    [("--capacity", "capacity="), ("--dirs", "dirs="), ("--size", "size=")];

/// A library message as a Python user reads it: fixes name arguments, not
/// command-line options.
fn for_python(message: &str) -> String {
    OPTIONS_AS_ARGUMENTS
        .iter()
        .fold(message.to_string(), |text, (option, argument)| text.replace(option, argument))
}

/// The Python exception for a library error.
pub fn to_py(err: Error) -> PyErr {
    Python::attach(|py| {
        let module =
            match ERRORS.get_or_try_init(py, || py.import("larder._errors").map(Bound::unbind)) {
                Ok(module) => module.bind(py),
                Err(e) => return e,
            };
        let made = module
            .getattr(class_name(err.kind()))
            .and_then(|class| class.call1((for_python(&err.to_string()),)));
        match made {
            Ok(exception) => PyErr::from_value(exception),
            Err(e) => e,
        }
    })
}

/// `larder::Result` into `PyResult`.
pub trait IntoPyResult<T> {
    /// Maps the error to its Python class.
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for larder::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
