//! One integration-test binary, a module per area.

mod mock;
mod paper_rest;
mod python;
mod rest;
mod sync;
mod util;
