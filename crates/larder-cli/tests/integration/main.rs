//! End-to-end tests of the `larder` binary. Each module covers one area;
//! `util` gives every test its own folder, home and command.

mod across_hosts;
mod archives;
mod azurite;
mod bad_input;
mod concurrency;
mod config;
mod coordinator;
mod crash;
mod dirs;
mod fault_proxy;
mod faults;
mod garage;
mod hosts;
mod http_server;
mod pools;
mod pypi;
mod pyproject;
mod reapi;
mod recipes;
mod remotes;
mod seeds;
mod serve;
mod sshd;
mod store;
mod util;
