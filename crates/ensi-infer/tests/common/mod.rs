//! Helpers shared by the encrypted-model tests.

/// Index of the largest value.
pub fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Largest |a - b| and the largest |b| (the reference's scale).
pub fn max_err_and_scale(got: &[f64], want: &[f64]) -> (f64, f64) {
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    (err, want.iter().fold(0.0f64, |m, v| m.max(v.abs())))
}
