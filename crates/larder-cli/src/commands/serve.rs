use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use larder::Home;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A folder of wheels and sdists to serve as a package index, in place (uploads land in it;
    /// larder's own state stays in the home)
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The interface to listen on
    #[arg(short = 'H', long, default_value = "0.0.0.0")]
    host: IpAddr,
    /// The port to listen on (0: any free port)
    #[arg(short, long, default_value_t = 8000)]
    port: u16,
    /// An htpasswd file (bcrypt, {SHA} or $apr1$ hashes); without one, anyone may read and write
    #[arg(short, long = "user-db", value_name = "USER_DB")]
    user_db: Option<PathBuf>,
    /// Log every request (debug logs)
    #[arg(short, long)]
    debug: bool,
    /// Write a line per request to standard error: client, user, time, request, status,
    /// bytes, milliseconds
    #[arg(long)]
    access_log: bool,
    /// Let requests without credentials read
    #[arg(long)]
    anonymous_read: bool,
    /// Users of the htpasswd file who may only read, comma separated
    #[arg(long, value_name = "USER,…", value_delimiter = ',')]
    read_only_users: Vec<String>,
    /// The largest upload accepted, like 100MiB [default: the store's capacity]
    #[arg(long, value_name = "SIZE")]
    max_blob_size: Option<String>,
    /// A PEM certificate chain, to serve HTTPS (with --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long a client may stay silent mid-request or idle between requests
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    timeout: String,
    /// Connections served at once; more are answered 503
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
    /// Memory for small blobs (up to 256 KiB each) read lately, served without touching the disk
    #[arg(long, value_name = "SIZE", default_value = "32MiB")]
    memory_cache: String,
    /// A Python simple index to proxy and cache, like https://pypi.org/simple/ (repeatable;
    /// asked in order; projects uploaded here shadow theirs)
    #[arg(long, value_name = "URL")]
    upstream: Vec<String>,
    /// How long an upstream's project page is trusted before it is asked again
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    upstream_ttl: String,
    /// How long an upstream may stay silent before it counts as down (a request with a page to fall
    /// back on is served it within 2 s)
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    upstream_timeout: String,
    /// How often DIR is looked through for new wheels and sdists
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    rescan: String,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

impl Args {
    /// Whether to log every request.
    pub fn debug(&self) -> bool {
        self.debug
    }
}

pub fn run(home: &Home, args: Args) -> Result<ExitCode> {
    let config = home.config();
    let mut home = config.home.clone();
    // One spelling of the folder, whatever the working folder, so that its
    // files keep their rows from one start to the next.
    let folder = match &args.dir {
        Some(dir) => {
            let dir = std::env::current_dir()?.join(dir);
            Some(dir.canonicalize().unwrap_or(dir))
        }
        None => None,
    };
    // A folder an earlier larder served was also its home (`store-v1/` in
    // it): it stays so, and its store and index go on.
    if let Some(folder) = &folder
        && folder.join("store-v1").is_dir()
    {
        home = folder.clone();
    }
    let mut options = larder_server::ServeOptions::new(
        home.clone(),
        config.capacity,
        SocketAddr::new(args.host, args.port),
    );
    options.folder = folder.clone();
    options.verify_reads = config.verify_reads;
    options.access_log = args.access_log;
    // Anyone who can reach it may then write: say so, and how not to.
    let open_to_all = args.user_db.is_none() && !args.host.is_loopback();
    options.user_db = args.user_db;
    options.anonymous_read = args.anonymous_read;
    options.read_only_users = args.read_only_users;
    options.max_blob_size =
        args.max_blob_size.as_deref().map(larder::size::parse_size).transpose()?;
    options.tls = args.tls_cert.zip(args.tls_key);
    options.timeout = larder::time::parse_duration(&args.timeout)?;
    options.max_connections = args.max_connections.max(1);
    options.memory_cache = larder::size::parse_size(&args.memory_cache)?;
    options.upstreams = args.upstream;
    options.upstream_ttl = larder::time::parse_duration(&args.upstream_ttl)?;
    options.upstream_timeout = larder::time::parse_duration(&args.upstream_timeout)?
        .max(std::time::Duration::from_secs(1));
    options.rescan =
        larder::time::parse_duration(&args.rescan)?.max(std::time::Duration::from_secs(1));
    let scheme = if options.tls.is_some() { "https" } else { "http" };
    larder_server::run(options, |addr| {
        // The address goes to standard output, so a script can read the port.
        println!("{scheme}://{addr}");
        // The warning before the line saying it serves: whoever waits for
        // that line has the warning too.
        if open_to_all {
            eprintln!(
                "larder: warning: listening on {} without -u: anyone who can reach it may read and write; give -u USERS.htpasswd (htpasswd -B), or -H 127.0.0.1 to serve this host only",
                addr.ip()
            );
        }
        match &folder {
            Some(folder) => eprintln!(
                "larder: serving the packages in {} and the store of {} on {scheme}://{addr}",
                folder.display(),
                home.display()
            ),
            None => eprintln!("larder: serving {} on {scheme}://{addr}", home.display()),
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
