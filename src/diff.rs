//! `diff-rules`.
use std::path::Path;
pub fn run(_old: &Path, _new: &Path, _until: Option<crate::time::Ts>, _verbose: bool, _files: &[String]) -> anyhow::Result<bool> { todo!() }
