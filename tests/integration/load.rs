//! Nothing is lost under a burst of execs.

use std::time::Duration;

use podwatch::pipeline::event::Kind;

use crate::harness::{bash_in, require_root, Agent, FakePod};

#[test]
fn a_thousand_execs_all_arrive() {
    require_root!();
    let agent = Agent::start();
    // Its own cgroup tells these execs apart from anything else on the machine.
    let pod = FakePod::cgroupfs("besteffort");
    let cg = pod.cgroup_id();
    let (_, status) = bash_in(Some(&pod.cgroup), "for i in $(seq 1000); do /bin/true; done");
    assert!(status.success());
    let is_true = |e: &podwatch::pipeline::event::Event| {
        e.kind == Kind::Exec
            && e.cgroup.id == cg
            && e.process.binary.as_deref().is_some_and(|b| b.ends_with("/true"))
    };
    let got = agent.wait_n(1000, Duration::from_secs(60), is_true).len();
    if got != 1000 {
        let mut by: std::collections::BTreeMap<String, usize> = Default::default();
        for e in agent.wait_n(usize::MAX, Duration::ZERO, |_| true) {
            *by.entry(format!(
                "{} {:?} {}",
                e.process.comm,
                e.kind,
                e.file.map(|f| f.path).unwrap_or_default()
            ))
            .or_default() += 1;
        }
        let mut top: Vec<_> = by.into_iter().collect();
        top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        panic!(
            "{got} of 1000 exec events; stats {}; busiest: {:?}",
            agent.stats()["stats"],
            &top[..top.len().min(10)]
        );
    }
    // And no more than 1000 (no duplicates), once everything has settled.
    assert_eq!(agent.drain(is_true).len(), 1000);
    let stats = agent.stats();
    assert_eq!(stats["stats"]["kernel_ringbuf_lost"], 0);
    assert_eq!(stats["stats"]["output_queue_drops"], 0);
}
