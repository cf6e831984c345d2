//! `ensi bench <suite>`: benchmarks that print a table and write JSON.

use crate::CliResult;
use clap::Args;

/// `ensi bench` arguments.
#[derive(Args)]
pub struct BenchArgs {
    /// Suite to run.
    pub suite: String,
}

pub fn run(_args: BenchArgs) -> CliResult {
    Err("not built yet".into())
}
