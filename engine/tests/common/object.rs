//! The object-store tests' shared pieces: unique prefixes and the S3 server of the environment.
#![allow(dead_code)] // each test binary uses some of the shared pieces

use std::sync::atomic::{AtomicU64, Ordering};

/// `base` with a path no other test, process or run uses.
pub fn unique(base: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}/t-{}-{}-{}",
        base.trim_end_matches('/'),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The S3-compatible server's URL (`FLOWSTATE_S3_URL`, which `.ci/run` sets after starting
/// one), or `None` with a loud message outside CI; in CI (`CI` set) a missing server fails the
/// test.
pub fn s3_url() -> Option<String> {
    match std::env::var("FLOWSTATE_S3_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("FLOWSTATE_S3_URL is unset in CI: .ci/run starts the S3 server")
        }
        _ => {
            eprintln!(
                "SKIPPED: FLOWSTATE_S3_URL is unset: no S3-compatible server to test against \
                 (bash .ci/run starts one; or `source .ci/s3-server.sh`)"
            );
            None
        }
    }
}
