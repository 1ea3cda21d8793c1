use std::process::ExitCode;

use anyhow::Result;
use larder::Home;

use crate::output;
use crate::progress::Bars;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only send what the upload queue owes the write-back remotes
    #[arg(long)]
    queued: bool,
    /// Drain the queue as a background job, retrying until it is empty
    /// (started by larder itself when uploads are owed)
    #[arg(long, hide = true, requires = "queued")]
    background: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let larder = home.larder_to_push()?;
    if args.background {
        let report = larder.drain_until_done(std::time::Duration::from_secs(15 * 60))?;
        if let Some(r) = report
            && let Some(e) = r.last_error
            && r.left > 0
        {
            tracing::warn!("{} still owed: {e}", larder::size::plural(r.left, "upload"));
        }
        larder.close_local()?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.queued {
        let report = larder.drain(true, &Bars::new())?;
        larder.close_local()?;
        if args.json {
            output::print_json(&report)?;
        } else {
            println!("sent {}, still owed {}", report.sent, report.left);
        }
        if report.left > 0 {
            anyhow::bail!(larder::Error::new(
                larder::ErrorKind::Io,
                format!(
                    "{} still owed: {}; larder tries again later, or run larder push --queued",
                    larder::size::plural(report.left, "upload"),
                    report.last_error.unwrap_or_default()
                )
            ));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reports = larder.push(&Bars::new())?;
    larder.close_local()?;
    if args.json {
        output::print_json(&reports)?;
    } else {
        let rows: Vec<Vec<String>> = reports
            .iter()
            .map(|r| {
                vec![
                    r.remote.clone(),
                    r.uploaded.to_string(),
                    r.present.to_string(),
                    r.keys.to_string(),
                ]
            })
            .collect();
        output::print_table(&["REMOTE", "UPLOADED", "ALREADY THERE", "KEYS"], &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
