//! `ensi`: the command-line face of the project. Thin by design: every command
//! parses its arguments and calls into the library crates.

mod bench;
mod bench_attention;
mod bench_block;
mod bench_e2e;
mod bench_pcmm;
mod demo;
mod model_cmd;
mod secure;

use clap::{Parser, Subcommand};

/// Non-interactive secure inference for BitNet b1.58 models with CKKS.
#[derive(Parser)]
#[command(name = "ensi", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole round on the built-in model: keys, server, encrypted tokens.
    Demo(demo::DemoArgs),
    /// Client: generate a key directory (secret key 0600, public evaluation keys).
    Keygen(secure::KeygenArgs),
    /// Client: tokenize, embed and encrypt a prompt.
    Encrypt(secure::EncryptArgs),
    /// Client: decrypt encrypted logits and print the top tokens.
    Decrypt(secure::DecryptArgs),
    /// Server side, from files: the encrypted forward pass (no secret key).
    Infer(secure::InferArgs),
    /// Server: HTTP API for sessions and encrypted inference.
    Serve(secure::ServeArgs),
    /// Client: open a session on a server and generate tokens.
    Client(secure::ClientArgs),
    /// Run benchmarks and write machine-readable results.
    Bench(bench::BenchArgs),
    /// Model utilities (write the built-in tiny checkpoint, ...).
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Generate text with a plaintext model (original or ENSI twin).
    Run(model_cmd::RunArgs),
    /// Compare the original model with the ENSI twin on a prompt set.
    Eval(model_cmd::EvalArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Keygen(a) => secure::keygen(a),
        Command::Encrypt(a) => secure::encrypt(a),
        Command::Decrypt(a) => secure::decrypt(a),
        Command::Infer(a) => secure::infer(a),
        Command::Serve(a) => secure::serve(a),
        Command::Client(a) => secure::client(a),
        Command::Bench(args) => bench::run(args),
        Command::Model(cmd) => model_cmd::model(cmd),
        Command::Run(args) => model_cmd::run(args),
        Command::Eval(args) => model_cmd::eval(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Errors of the command line: every library error is shown as text.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;
