//! How the command line prints: one-line errors with exit codes, tables, JSON
//! and dates.

use std::io::Write;

use larder::ErrorKind;

/// The name errors are printed under: `larder`, or the seed's command
/// (`sc`, `crcache`, …) larder was called as.
static PROGRAM: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Prints errors under `name` from now on.
pub fn set_program(name: &'static str) {
    let _ = PROGRAM.set(name);
}

/// Prints `err` as one line, with the causes a non-larder error carries.
pub fn print_error(err: &anyhow::Error) {
    let mut line = String::new();
    for (i, cause) in err.chain().enumerate() {
        let text = cause.to_string();
        // A larder error's message already names its cause.
        if i > 0 && line.contains(&text) {
            continue;
        }
        if i > 0 {
            line.push_str(": ");
        }
        line.push_str(&text);
        if cause.downcast_ref::<larder::Error>().is_some() {
            break;
        }
    }
    let program = PROGRAM.get().copied().unwrap_or("larder");
    let _ = writeln!(std::io::stderr(), "{program}: error: {line}");
}

/// Reports that `program` could not be started, and returns the exit code a
/// shell gives: 127 for a command not found, 126 for one that cannot run.
/// `what` says which command it was (`for vm-0`), `fix` where to look.
pub fn cannot_run(
    program: &str,
    what: &str,
    err: std::io::Error,
    fix: &str,
) -> std::process::ExitCode {
    let not_found = err.kind() == std::io::ErrorKind::NotFound;
    let why = if not_found {
        "no such command (it is not in PATH)".to_string()
    } else {
        larder::Error::io("run", std::path::Path::new(program), err).to_string()
    };
    print_error(&anyhow::anyhow!("cannot run `{program}`{what}: {why}; {fix}"));
    std::process::ExitCode::from(if not_found { 127 } else { 126 })
}

/// The documented exit code for an error (see `larder --help`).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let kind = err.chain().find_map(|c| c.downcast_ref::<larder::Error>()).map(larder::Error::kind);
    exit_code_of(kind.unwrap_or(ErrorKind::Io))
}

/// The documented exit code for an error of `kind` (the README's table).
pub fn exit_code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound => 1,
        ErrorKind::InvalidInput | ErrorKind::Config | ErrorKind::Conflict => 2,
        ErrorKind::Corrupt => 3,
        ErrorKind::StoreFull | ErrorKind::DiskFull => 4,
        ErrorKind::PermissionDenied => 5,
        ErrorKind::Busy | ErrorKind::Io => 6,
    }
}

/// Per-item failures of a command that goes on past them: each is printed
/// when it happens; the exit code is the first one's.
#[derive(Default)]
pub struct Failures(Option<u8>);

impl Failures {
    pub fn report(&mut self, err: larder::Error) {
        let err = anyhow::Error::from(err);
        print_error(&err);
        self.0.get_or_insert(exit_code(&err));
    }

    pub fn exit_code(&self) -> std::process::ExitCode {
        self.0.map_or(std::process::ExitCode::SUCCESS, std::process::ExitCode::from)
    }
}

/// Prints a report of the library as JSON on stdout, its keys in order.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let value = serde_json::to_value(value)?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &value)?;
    writeln!(out)?;
    Ok(())
}

/// Bad usage: arguments that cannot work together (exit 2).
pub fn usage(message: impl Into<String>) -> larder::Error {
    larder::Error::new(ErrorKind::InvalidInput, message)
}

/// Prints rows as left-aligned columns separated by two spaces.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let mut line = |cells: Vec<&str>| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(header.to_vec())?;
    for row in rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}
