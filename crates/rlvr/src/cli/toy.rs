use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write `model/` (tiny random HF checkpoint) and `data/{train,validation}.parquet`.
    pub dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `rlvr toy DIR`: the toy task of `examples/toy/`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::toy::write(&args.dir, args.seed)?;
    println!(
        "wrote {}/model and {}/data",
        args.dir.display(),
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
