//! The seed corpus of the fuzz targets (`sessiond_fuzz::seeds`), checked in under
//! `tests/__fuzz__/<target>/corpus/`, where bolero replays it before its random inputs.
//!
//! Regenerate it after changing a message or a target's input format:
//! `cargo nextest run --release -p sessiond-fuzz --run-ignored only -E 'test(write_seed_corpus)'`.

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/__fuzz__")
        .join(target)
        .join("corpus")
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    for (target, name, bytes) in sessiond_fuzz::seeds::all() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
}

/// Every target has its seeds where bolero looks for them.
#[test]
fn every_target_has_a_corpus() {
    let mut targets: Vec<&str> = sessiond_fuzz::seeds::all()
        .iter()
        .map(|(t, _, _)| *t)
        .collect();
    targets.dedup();
    assert_eq!(targets.len(), 6);
    for target in targets {
        let files = std::fs::read_dir(corpus_dir(target))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(
            files > 0,
            "no corpus for {target} in {:?}",
            corpus_dir(target)
        );
    }
}
