//! The on-demand price table (us-east-1, Linux, USD per hour) squall's estimates use:
//! a run's cost in `squall runs` and its report, and its spend against `budget_usd`.
//! Estimates only: real bills differ by region, discounts and spot prices.

/// The instance type of a group that names none.
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";

/// On-demand prices, USD per hour (us-east-1, Linux), for cost estimates only.
pub const PRICES: &[(&str, f64)] = &[
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("c6i.large", 0.085),
    ("c7i.large", 0.08925),
    ("c7i.xlarge", 0.1785),
    ("m7i.large", 0.1008),
    ("m7i.xlarge", 0.2016),
    ("r7i.large", 0.1323),
    ("g4dn.xlarge", 0.526),
    ("g5.xlarge", 1.006),
    ("g6.xlarge", 0.8048),
    ("p3.2xlarge", 3.06),
];

pub fn price(instance_type: &str) -> Option<f64> {
    PRICES
        .iter()
        .find(|(t, _)| *t == instance_type)
        .map(|(_, p)| *p)
}

/// The most expensive of `types` the table knows (a group's ladder is priced at its
/// dearest rung), or the default type's price for a group that names none.
pub fn dearest(types: &[String]) -> Option<f64> {
    if types.is_empty() {
        return price(DEFAULT_INSTANCE_TYPE);
    }
    types.iter().filter_map(|t| price(t)).reduce(f64::max)
}
