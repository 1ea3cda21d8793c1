use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use larder::{ErrorKind, Home, Put};

use crate::output;
use crate::progress::Bars;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files to store; `-` reads standard input
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Store the files in the folders given, and in their folders (symbolic links are not followed)
    #[arg(short, long)]
    recursive: bool,
    /// Bind this key to the blob (one file only)
    #[arg(long)]
    key: Option<String>,
    /// Pin the blob so eviction never removes it
    #[arg(long)]
    pin: bool,
    /// Send it to every remote that takes writes now, write-back ones too,
    /// and fail if one cannot take it (write-through remotes get every put
    /// anyway; write-back ones otherwise get it in the background)
    #[arg(long)]
    upload: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let stdin = Path::new("-");
    let reads_stdin = args.files.iter().any(|f| f == stdin);
    if reads_stdin && args.files.len() > 1 {
        anyhow::bail!(output::usage(
            "`-` (standard input) must be the only file when given; put other files in another call"
        ));
    }
    let files = if args.recursive { files_under(&args.files)? } else { args.files };
    let put = Put { key: args.key, pin: args.pin, upload: args.upload };
    let larder = home.larder()?;
    let bars = Bars::new();
    let results = if reads_stdin {
        vec![larder.put_stream(&mut std::io::stdin().lock(), stdin, &put, &bars)?]
    } else {
        larder.put_paths(&files, &put, &bars)?
    };
    let mut failures = output::Failures::default();
    let mut stored = Vec::new();
    // When the disk or the store is full, every file after the first fails
    // the same way: one line says so, with how many.
    let mut no_room: Option<(larder::Error, usize)> = None;
    for result in results {
        match result {
            Ok(item) if args.json => stored.push(item),
            Ok(item) if files.len() == 1 => println!("{}", item.digest),
            Ok(item) => println!("{}  {}", item.digest, item.file.display()),
            Err(e) if matches!(e.kind(), ErrorKind::DiskFull | ErrorKind::StoreFull) => {
                match &mut no_room {
                    Some((first, count)) if first.kind() == e.kind() => *count += 1,
                    Some(_) => failures.report(e),
                    None => no_room = Some((e, 1)),
                }
            }
            Err(e) => failures.report(e),
        }
    }
    if let Some((first, count)) = no_room {
        failures.report(if count == 1 {
            first
        } else {
            larder::Error::new(
                first.kind(),
                format!("{count} of {} files were not stored; the first: {first}", files.len()),
            )
        });
    }
    if args.json {
        output::print_json(&stored)?;
    }
    // Starts the background uploader if write-back remotes are owed.
    larder.close_local()?;
    Ok(failures.exit_code())
}

/// The files of `paths`: files as they are, folders walked in name order.
/// Inside a folder, a symbolic link counts if it leads to a file; links to
/// folders are not followed (they could lead in circles).
fn files_under(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = paths.iter().rev().cloned().collect();
    while let Some(path) = stack.pop() {
        if !path.is_dir() {
            files.push(path);
            continue;
        }
        let list_error = |e| larder::Error::io("list", &path, e);
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(list_error)? {
            let entry = entry.map_err(list_error)?;
            let is_link = entry.file_type().map_err(list_error)?.is_symlink();
            if !is_link || entry.path().is_file() {
                entries.push(entry.path());
            }
        }
        entries.sort();
        stack.extend(entries.into_iter().rev());
    }
    Ok(files)
}
