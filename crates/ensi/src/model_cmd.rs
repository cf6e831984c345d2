//! `ensi model`, `ensi run`, `ensi eval` (plaintext model commands).

use crate::CliResult;
use clap::{Args, Subcommand};

/// `ensi model ...`
#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a deterministic small checkpoint in the Hugging Face layout.
    Init {},
}

/// `ensi run` arguments.
#[derive(Args)]
pub struct RunArgs {}

/// `ensi eval` arguments.
#[derive(Args)]
pub struct EvalArgs {}

pub fn model(_cmd: ModelCommand) -> CliResult {
    Err("not built yet".into())
}
pub fn run(_args: RunArgs) -> CliResult {
    Err("not built yet".into())
}
pub fn eval(_args: EvalArgs) -> CliResult {
    Err("not built yet".into())
}
