//! Placeholder replaced by the wire benchmark task.
fn main() {}
