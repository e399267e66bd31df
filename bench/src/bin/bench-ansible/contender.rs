//! What is timed: the five contenders (squall, ansible-playbook linear and with Mitogen,
//! the raw ssh floor with and without connecting) and the two workloads.
//!
//! Names and data only; running them is `run.rs`'s.

/// One way of running the workload on the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    Squall,
    Ansible,
    Mitogen,
    /// Pre-established ControlMasters (set up before the clock starts).
    Floor,
    /// The same, with the ControlMasters set up inside the timed region.
    FloorConnect,
}

pub const CONTENDERS: [Contender; 5] = [
    Contender::Squall,
    Contender::Ansible,
    Contender::Mitogen,
    Contender::Floor,
    Contender::FloorConnect,
];

impl Contender {
    pub fn label(self) -> &'static str {
        match self {
            Contender::Squall => "squall",
            Contender::Ansible => "ansible-playbook (linear, pipelining)",
            Contender::Mitogen => "ansible-playbook + mitogen_linear",
            Contender::Floor => "raw ssh floor (pre-connected)",
            Contender::FloorConnect => "raw ssh floor incl. connect",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Contender::Squall => "squall",
            Contender::Ansible => "ansible",
            Contender::Mitogen => "mitogen",
            Contender::Floor => "floor",
            Contender::FloorConnect => "floor+connect",
        }
    }
}

/// The same tasks on every host, in order; each task is an argv.
#[derive(Debug)]
pub struct Workload {
    pub key: &'static str,
    pub title: &'static str,
    pub tasks: Vec<Vec<&'static str>>,
}

pub fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            key: "a",
            title: "(a) 10 hosts x 10 trivial tasks (`/bin/true`)",
            tasks: vec![vec!["/bin/true"]; 10],
        },
        Workload {
            key: "b",
            title: "(b) 10 hosts x 1 task `sleep 1`",
            tasks: vec![vec!["sleep", "1"]],
        },
    ]
}
