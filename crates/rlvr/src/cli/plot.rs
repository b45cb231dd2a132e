use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory (`trainer.log_path/trainer.run_name`) holding `metrics.jsonl`.
    pub run_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    for f in crate::plot::plot_run(&args.run_dir)? {
        println!("{}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
