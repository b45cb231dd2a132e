//! `rlvr conformance DIR`: run every golden file in DIR through rlvr-algo and report pass/fail per
//! file; the last line is `N passed, M failed`. Exits 0 only when nothing failed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Directory holding golden JSON files (same names and schema as SkyRL's golden vectors).
    pub dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let summary = rlvr_algo::conformance::run_dir(&args.dir, &mut out)?;
    out.flush()?;
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
