//! What is timed: the floors (each leg of a transfer alone), squall's `copy` and
//! `fetch` and their shell peers, with the interval each one's clock covers.
//!
//! Names and words only; running them is `run.rs`'s.

/// One way of moving the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contender {
    /// `aws s3 cp s3://B/K -` into a pipe this process counts: S3 (moto) -> here.
    FloorGet,
    /// `ssh HOST cat FILE` into a pipe this process counts: host -> here.
    FloorSshRead,
    /// The generator into `ssh HOST wc -c`: here -> host.
    FloorSshWrite,
    /// The generator into `aws s3 cp - s3://B/K`: here -> S3 (moto).
    FloorPut,
    /// 1. squall `copy` S3 -> host.
    SquallCopy,
    /// 2. `aws s3 cp s3://B/K - | ssh HOST 'cat > FILE'`.
    PeerCopy,
    /// 3. squall `fetch` host -> S3.
    SquallFetch,
    /// 4. `ssh HOST cat FILE | aws s3 cp - s3://B/K2`.
    PeerFetch,
}

pub const FLOORS: [Contender; 4] = [
    Contender::FloorGet,
    Contender::FloorSshRead,
    Contender::FloorSshWrite,
    Contender::FloorPut,
];
/// The two directions, squall first.
pub const PAIRS: [[Contender; 2]; 2] = [
    [Contender::SquallCopy, Contender::PeerCopy],
    [Contender::SquallFetch, Contender::PeerFetch],
];

impl Contender {
    pub fn short(self) -> &'static str {
        match self {
            Contender::FloorGet => "floor aws get",
            Contender::FloorSshRead => "floor ssh read",
            Contender::FloorSshWrite => "floor ssh write",
            Contender::FloorPut => "floor aws put",
            Contender::SquallCopy => "squall copy",
            Contender::PeerCopy => "aws|ssh copy",
            Contender::SquallFetch => "squall fetch",
            Contender::PeerFetch => "ssh|aws fetch",
        }
    }

    /// The table's name for it (markdown).
    pub fn label(self) -> &'static str {
        match self {
            Contender::FloorGet => "floor: `aws s3 cp s3://B/K -` > pipe",
            Contender::FloorSshRead => "floor: `ssh HOST cat FILE` > pipe",
            Contender::FloorSshWrite => "floor: generator \\| `ssh HOST wc -c`",
            Contender::FloorPut => "floor: generator \\| `aws s3 cp - s3://B/K`",
            Contender::SquallCopy => "1. squall `copy` S3 -> host",
            Contender::PeerCopy => "2. `aws s3 cp s3://B/K - \\| ssh HOST 'cat > FILE'`",
            Contender::SquallFetch => "3. squall `fetch` host -> S3",
            Contender::PeerFetch => "4. `ssh HOST cat FILE \\| aws s3 cp - s3://B/K2`",
        }
    }

    pub fn is_squall(self) -> bool {
        matches!(self, Contender::SquallCopy | Contender::SquallFetch)
    }

    /// The shell pipeline a squall contender is compared with.
    pub fn peer(self) -> Option<Contender> {
        match self {
            Contender::SquallCopy => Some(Contender::PeerCopy),
            Contender::SquallFetch => Some(Contender::PeerFetch),
            _ => None,
        }
    }

    /// Whose peak RSS the table's column holds.
    pub fn measured(self) -> &'static str {
        match self {
            Contender::SquallCopy | Contender::SquallFetch => "squall (VmHWM)",
            Contender::FloorSshRead | Contender::FloorSshWrite => "ssh (GNU time)",
            _ => "aws (GNU time)",
        }
    }
}
