//! `larder coordinator-agent`: renews this host's leases at a Redis
//! coordinator while its processes hold something. Started detached by
//! larder itself, never by hand.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use larder::coord::{HostAgent, RedisOptions};

use larder::Home;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The coordinator's URL (from the environment, so that a password never
    /// shows in the process list)
    #[arg(long, env = "LARDER_COORDINATOR", hide_env_values = true)]
    coordinator: String,
    /// How long a hold lasts unless renewed, in milliseconds
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// What every key starts with
    #[arg(long, default_value = "larder")]
    prefix: String,
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    // The password comes as the command's would: from the URL,
    // `REDISCLI_AUTH` or the netrc file.
    let password = larder::coord::redis::password_for(&args.coordinator, &home.config().env);
    let options = RedisOptions {
        lease: Duration::from_millis(args.lease_ms),
        prefix: args.prefix,
        agent: HostAgent::None,
        password,
        ..home.redis_options()
    };
    larder::coord::redis::run_host_agent(&args.coordinator, options)?;
    Ok(ExitCode::SUCCESS)
}
