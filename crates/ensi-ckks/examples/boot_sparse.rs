//! One sparse-slot bootstrap at `n16-boot` (N = 2^16, 128-bit): 2^9 slots,
//! one SlotsToCoeffs level (12 levels left), default CoeffsToSlots.
//!
//! Prints key generation time, key sizes (in memory and serialized, written to
//! and read back from a file with the streaming API), then the time and
//! precision of one bootstrap on 1 and on 2 threads, with the time of each
//! phase ([`Bootstrapper::bootstrap_timed`]) and the peak memory. Needs about
//! 6 GB of memory (the keys, ~4 GB; before sparse packing and compact
//! diagonals, 12 GB) and a few minutes: run it alone, in release mode:
//!
//! `cargo run --release -p ensi-ckks --example boot_sparse [KEY_FILE]`
use ensi_ckks::circuits::bootstrap::{BootstrapConfig, BootstrapKeys, Bootstrapper};
use ensi_ckks::*;
use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

/// CPU seconds this process has used (user + system, from /proc; 0 elsewhere):
/// with other jobs on the machine, wall time alone says little.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of this process in GiB (VmHWM, from /proc; 0 elsewhere).
fn peak_rss_gib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 2f64.powi(20))
}

/// Restarts the peak-memory count (Linux: "5" to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / 2f64.powi(30)
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let log_slots = 9;
    let params = ParametersLiteral::preset("n16-boot")?.build()?;
    let config = BootstrapConfig::for_params(&params)
        .with_log_slots(log_slots)
        .with_levels(4, 1);
    println!(
        "{}: log QP {:.1}, 2^{log_slots} slots, CtS {} StC {}, EvalMod depth {}, output level {}",
        params.name(),
        params.log_qp(),
        config.cts_levels,
        config.stc_levels,
        config.eval_mod_depth(),
        config.output_level(&params)?
    );
    let sk = KeyGenerator::new(&params).gen_secret_key();

    let (t, cpu) = (Instant::now(), cpu_seconds());
    let keys = BootstrapKeys::generate(&params, &config, &sk, &[])?;
    println!(
        "keygen: {:.1} s wall, {:.1} s CPU ({} threads), {} Galois keys, {} bytes in memory ({:.2} GiB)",
        t.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
        rayon::current_num_threads(),
        keys.eval.galois.len(),
        keys.byte_size(),
        gib(keys.byte_size() as u64)
    );

    let path = std::env::args_os()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("ensi-n16-boot-sparse.keys"));
    let t = Instant::now();
    {
        let mut file = BufWriter::new(std::fs::File::create(&path)?);
        keys.write_to(&params, &mut file)?;
        file.flush()?;
    }
    let file_len = std::fs::metadata(&path)?.len();
    println!(
        "write_to: {:.1} s, {} bytes ({:.2} GiB, {:.3} of in memory) in {}",
        t.elapsed().as_secs_f64(),
        file_len,
        gib(file_len),
        file_len as f64 / keys.byte_size() as f64,
        path.display()
    );
    drop(keys);
    let t = Instant::now();
    let keys = BootstrapKeys::read_from(&params, &mut BufReader::new(std::fs::File::open(&path)?))?;
    println!("read_from: {:.1} s", t.elapsed().as_secs_f64());
    std::fs::remove_file(&path)?;

    let t = Instant::now();
    let bt = Bootstrapper::new(&params, config, keys)?;
    println!(
        "Bootstrapper::new: {:.2} s, {} bytes of diagonals encoded once ({:.1} MiB); peak memory so far {:.2} GiB",
        t.elapsed().as_secs_f64(),
        bt.encoded_bytes(),
        bt.encoded_bytes() as f64 / 2f64.powi(20),
        peak_rss_gib()
    );
    reset_peak_rss();
    let encoder = Encoder::new(&params);
    let dec = Decryptor::new(&sk);
    let mut enc = Encryptor::with_secret_key(&params, &sk);
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let values: Vec<Complex64> = (0..1usize << log_slots)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            Complex64::new((s >> 11) as f64 / 2f64.powi(53) * 2.0 - 1.0, 0.0)
        })
        .collect();
    for (threads, log_d) in [(2, 40), (1, 40), (2, 40), (2, 36)] {
        let pt = encoder.encode(&values, 0, (log_d as f64).exp2(), log_slots)?;
        let ct = enc.encrypt(&pt)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let (out, phases) = pool.install(|| bt.bootstrap_timed(&ct))?;
        let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        let got = encoder.decode(&dec.decrypt(&out)?);
        let (mut max, mut sum) = (0f64, 0f64);
        for (a, b) in got.iter().zip(&values) {
            let e = (a - b).norm();
            max = max.max(e);
            sum += -e.max(1e-300).log2();
        }
        println!(
            "bootstrap, {threads} thread(s), real |z| <= 1 at D = 2^{log_d}: {secs:.1} s wall, {cpu:.1} s CPU, \
             precision {:.1} bits (max error), mean {:.1} bits, level {}, scale 2^{:.1}",
            -max.log2(),
            sum / got.len() as f64,
            out.level(),
            out.scale().log2()
        );
        println!(
            "  phases (wall): ModRaise + trace {:.2} s, CtS {:.2} s, EvalMod {:.2} s, StC {:.2} s \
             (of CtS + StC: encoding diagonals {:.2} s)",
            phases.mod_raise.as_secs_f64(),
            phases.coeffs_to_slots.as_secs_f64(),
            phases.eval_mod.as_secs_f64(),
            phases.slots_to_coeffs.as_secs_f64(),
            phases.encoding.as_secs_f64()
        );
    }
    println!(
        "peak memory during the bootstraps (keys included): {:.2} GiB",
        peak_rss_gib()
    );
    Ok(())
}
