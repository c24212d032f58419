//! Instruction counts under `valgrind --tool=callgrind`: deterministic, so
//! they compare sides whose pairs/s differ by less than the machine's load
//! moves them.

use std::process::Command;

/// Pairs counted per side: the difference between the two runs is the cost
/// of `PAIRS.1 - PAIRS.0` pairs, start-up and loading cancelled out.
pub const PAIRS: (u64, u64) = (500, 5_500);

/// Instructions `valgrind --tool=callgrind` counts for this binary run with
/// `args` (a worker mode that does `pairs` pairs).
pub fn count(args: &[String]) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(&exe)
        .args(args)
        .output()
        .map_err(|e| format!("valgrind could not start ({e}); install valgrind"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("valgrind failed: {}", text.lines().last().unwrap_or("")));
    }
    text.lines()
        .find_map(|l| l.split_once("Collected :").map(|(_, n)| n.trim().to_owned()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "no `Collected :` line in callgrind's output".to_owned())
}

/// Instructions per pair of the worker `args(pairs)` describes.
pub fn per_pair(args: impl Fn(u64) -> Vec<String>) -> Result<f64, String> {
    let (a, b) = (count(&args(PAIRS.0))?, count(&args(PAIRS.1))?);
    Ok(b.saturating_sub(a) as f64 / (PAIRS.1 - PAIRS.0) as f64)
}
