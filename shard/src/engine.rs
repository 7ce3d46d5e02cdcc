//! engine (in progress)
/// The engine.
#[derive(Debug)]
pub struct Engine;
