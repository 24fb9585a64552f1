//! The JS package's TypeScript declarations of the API's option and result types are
//! generated from the Rust types (`sphinx_core::api`, ts-rs). This test fails when the
//! committed `web/js/types.d.ts` is stale; `SPHINX_UPDATE_TYPES=1` rewrites it.

use sphinx_core::api::{AskOptions, AskResult, DownloadProgress, ErrorKind, LoadOptions, MixOptions, ModelInfo, ParsedAnswer, TaskPreset};
use sphinx_core::generate::StopReason;
use sphinx_core::tasks::{Answer, BoxCoords, DrawCommand, Entity, PointCoords};
use ts_rs::{Config, TS};

fn declarations() -> String {
    let cfg = Config::default().with_large_int("number");
    let decls = [
        AskOptions::decl(&cfg),
        AskResult::decl(&cfg),
        ParsedAnswer::decl(&cfg),
        Answer::decl(&cfg),
        Entity::decl(&cfg),
        BoxCoords::decl(&cfg),
        PointCoords::decl(&cfg),
        DrawCommand::decl(&cfg),
        StopReason::decl(&cfg),
        LoadOptions::decl(&cfg),
        MixOptions::decl(&cfg),
        DownloadProgress::decl(&cfg),
        ModelInfo::decl(&cfg),
        TaskPreset::decl(&cfg),
        ErrorKind::decl(&cfg),
    ];
    let mut out = String::from(
        "// Generated from sphinx-core's API types (core/src/api.rs) by tests/tests/ts_types.rs.\n\
         // Do not edit: run `SPHINX_UPDATE_TYPES=1 cargo test -p sphinx-tests --test ts_types`.\n\n",
    );
    for d in decls {
        out.push_str("export ");
        out.push_str(&d);
        out.push_str("\n\n");
    }
    out
}

#[test]
fn typescript_declarations_are_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/js/types.d.ts");
    let want = declarations();
    if std::env::var_os("SPHINX_UPDATE_TYPES").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(have == want, "web/js/types.d.ts is stale: run SPHINX_UPDATE_TYPES=1 cargo test -p sphinx-tests --test ts_types");
}
