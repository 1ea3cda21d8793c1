//! The test hosts of `larder::testing::hosts` are what they claim to be.

use std::process::{Command, Stdio};

use larder::testing::hosts::{Host, Network};

use crate::util::wait_for;

#[test]
fn hosts_have_their_own_names_processes_and_addresses_and_can_be_cut_off_and_killed() {
    let mut net = Network::new(2);
    let say = |mut cmd: Command| {
        let out = cmd.output().expect("run on a host");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for host in &net.hosts {
        assert_eq!(say(host.command("hostname")), host.name);
        let mut addrs = host.command("hostname");
        addrs.arg("-I");
        let addrs = say(addrs);
        assert_eq!(addrs, host.addr, "{}", host.name);
    }
    // A process of one host is not visible from the other.
    let mut sleeper = net.hosts[0]
        .bash("sleep 60 & echo $!; wait", &[])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sleeper.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("read pid");
    let pid = line.trim();
    assert_eq!(say(net.hosts[0].bash(&format!("test -d /proc/{pid} && echo seen"), &[])), "seen");
    assert_eq!(
        say(net.hosts[1].bash(&format!("test -d /proc/{pid} || echo unseen"), &[])),
        "unseen"
    );
    // Both reach a service on the bridge, until cut off.
    let mut service = net
        .service_command("/usr/bin/python3")
        .args(["-m", "http.server", "--bind", &net.service_addr(), "8765"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a service");
    let reaches = |h: &Host| {
        let probe = format!("exec 3<>/dev/tcp/{}/8765", net.service_addr());
        let mut probe_cmd = h.command("timeout");
        probe_cmd.args(["2", "bash", "-c", &probe]).stderr(Stdio::null());
        probe_cmd.status().expect("probe").success()
    };
    wait_for("the service", || reaches(&net.hosts[0]));
    assert!(reaches(&net.hosts[1]));
    net.hosts[1].cut_off();
    assert!(!reaches(&net.hosts[1]));
    net.hosts[1].reconnect();
    wait_for("the link to come back", || reaches(&net.hosts[1]));
    let _ = service.kill();
    let _ = service.wait();
    // Killing a host ends every process in it.
    net.hosts[0].kill();
    assert!(!net.hosts[0].is_up());
    let status = sleeper.wait().expect("wait");
    assert!(!status.success());
}
