use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::Context;
use crate::output;
use crate::progress::Bars;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files to store; `-` reads standard input
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
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
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    if args.key.is_some() && args.files.len() > 1 {
        anyhow::bail!(larder::Error::new(
            larder::ErrorKind::InvalidInput,
            format!(
                "--key names one entry but {} files were given; put them one at a time",
                args.files.len()
            )
        ));
    }
    if let Some(key) = &args.key {
        larder::validate_user_key(key)?;
    }
    let larder = ctx.open_larder()?;
    if args.upload && !larder.has_writable_remote() {
        anyhow::bail!(larder::Error::new(
            larder::ErrorKind::Config,
            "--upload needs a remote that takes writes: add a [[remote]] with mode = \"write-through\" to the configuration"
        ));
    }
    let store = larder.store();
    let opts = larder.put_options(args.key.clone(), args.pin);
    let bars = Bars::new();
    let stdin_count = args.files.iter().filter(|f| f.as_os_str() == "-").count();
    if stdin_count > 0 && args.files.len() > 1 {
        anyhow::bail!(larder::Error::new(
            larder::ErrorKind::InvalidInput,
            "`-` (standard input) must be the only file when given; put other files in another call"
        ));
    }
    // One file to upload now: the upload runs while the local copy is
    // flushed. Many files are stored in batches first, then sent.
    let uploading_one = args.upload && stdin_count == 0 && args.files.len() == 1;
    let results = if stdin_count == 1 {
        vec![store.put_reader(&mut std::io::stdin().lock(), &opts, &bars)]
    } else if uploading_one {
        vec![larder.put_uploading(&args.files[0], &opts, &bars)]
    } else {
        store.put_files(&args.files, &opts, &bars)
    };
    // Every put reaches the remotes that take writes, a few at once.
    let stored: Vec<(larder::Digest, Option<String>)> = if uploading_one {
        Vec::new()
    } else {
        results.iter().filter_map(|r| r.as_ref().ok().map(|d| (*d, args.key.clone()))).collect()
    };
    let mut sent = larder.send_all(&stored, args.upload).into_iter();
    let mut failures = output::Failures::default();
    let mut rows = Vec::new();
    for (file, result) in args.files.iter().zip(results) {
        let result = result.and_then(|digest| match sent.next() {
            Some(Ok(())) | None => Ok(digest),
            Some(Err(e)) => {
                Err(larder::Error::new(e.kind(), format!("{digest} is stored locally, but: {e}")))
            }
        });
        match result {
            Ok(digest) => {
                if args.json {
                    rows.push(json!({ "file": file, "digest": digest.to_string() }));
                } else if args.files.len() == 1 {
                    println!("{digest}");
                } else {
                    println!("{digest}  {}", file.display());
                }
            }
            Err(e) => failures.report(e),
        }
    }
    if args.json {
        output::print_json(&serde_json::Value::Array(rows))?;
    }
    let owed = !larder.store().queued_uploads()?.is_empty();
    larder.close_local()?;
    if owed {
        super::start_uploading(ctx);
    }
    Ok(failures.exit_code())
}
