//! `crcache`: crcache's command line, done by larder.

#[path = "../seed_shim.rs"]
mod seed_shim;

fn main() -> std::process::ExitCode {
    seed_shim::exec_larder_as("crcache")
}
