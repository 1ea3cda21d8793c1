use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::output;
use larder::Home;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: WheelsCommand,
}

#[derive(Debug, Subcommand)]
enum WheelsCommand {
    /// Install packages with pip from a larder server's index, building what it lacks,
    /// and (with -u) sending the wheels built here back to it
    Install {
        /// The larder server, like http://alice@cache:8000 (the password from LARDER_PASSWORD
        /// or ~/.netrc)
        #[arg(short = 'c', long = "cache", value_name = "URL")]
        url: String,
        /// Upload the wheels built here to the server
        #[arg(short, long)]
        upload: bool,
        /// A requirements file (repeatable)
        #[arg(short, long = "requirement", value_name = "FILE")]
        requirements: Vec<PathBuf>,
        /// The Python whose pip builds and installs
        #[arg(long, value_name = "PATH", default_value = "python3")]
        python: PathBuf,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Requirements, as pip takes them
        #[arg(value_name = "PKG")]
        packages: Vec<String>,
        /// Options for `pip wheel`, which resolves and builds, after `--`: like
        /// `-- --no-build-isolation --extra-index-url URL`
        #[arg(last = true, value_name = "PIP_ARGS")]
        pip_args: Vec<String>,
    },
}

pub fn run(_home: &Home, args: Args) -> Result<ExitCode> {
    let WheelsCommand::Install { url, upload, requirements, python, json, packages, pip_args } =
        args.command;
    let report = larder::wheels::install(&larder::wheels::WheelsInstall {
        url,
        upload,
        packages,
        requirements,
        python,
        pip_args,
    })?;
    if json {
        output::print_json(&json!({
            "from_server": report.from_server,
            "built": report.built,
            "uploaded": report.uploaded,
        }))?;
    } else {
        let mut rows = Vec::new();
        for f in &report.from_server {
            rows.push(vec![f.clone(), "from the server".to_string()]);
        }
        for f in &report.built {
            let how =
                if report.uploaded.contains(f) { "built here, uploaded" } else { "built here" };
            rows.push(vec![f.clone(), how.to_string()]);
        }
        output::print_table(&["WHEEL", "HOW"], &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
