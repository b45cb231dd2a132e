//! Byte-mutation fuzzing of the framework's own input formats: training data (parquet) and
//! YAML configs. Every input ends in rows or a config, or in an error; never a panic.

#[path = "../../rlvr-model/tests/common/fuzz.rs"]
mod fuzz;

use fuzz::{cases, mutate, quiet_panics, Mutator, Tally};
use rlvr::config::{ConfigBuilder, Origin};

#[test]
fn parquet_data_files_never_panic() {
    quiet_panics();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.parquet");
    rlvr::data::write_rows(&path, &rlvr::toy::rows(2)).unwrap();
    let base = std::fs::read(&path).unwrap();
    let mut rng = Mutator(0x5eed_0101);
    let mut tally = Tally::default();
    for i in 0..cases() {
        // Parquet's metadata sits at the end (footer, its length, the magic): mutate the file
        // reversed, so the "hot" head of the mutator is the footer.
        let mut reversed = base.clone();
        reversed.reverse();
        let mut bytes = mutate(&mut rng, &reversed, base.len() / 3);
        bytes.reverse();
        std::fs::write(&path, &bytes).unwrap();
        tally.run(&format!("case {i}"), || rlvr::data::read_rows(&path));
    }
    tally.check("parquet");
}

#[test]
fn yaml_configs_never_panic() {
    quiet_panics();
    let toy =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/toy/dapo_toy.yaml");
    let base = std::fs::read(toy).unwrap();
    let mut rng = Mutator(0x5eed_0102);
    let mut tally = Tally::default();
    for i in 0..cases() {
        let bytes = mutate(&mut rng, &base, base.len());
        let text = String::from_utf8_lossy(&bytes).into_owned();
        tally.run(&format!("case {i}"), || -> anyhow::Result<()> {
            let mut b = ConfigBuilder::new();
            b.merge_yaml(&text, Origin::File("fuzz.yaml".into()))?;
            b.resolve()?.validate()?;
            Ok(())
        });
    }
    tally.check("yaml config");
}
