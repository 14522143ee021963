//! Integration tests of rewind against simple models.

mod bad_input;
mod gc_model;
mod model;
mod persist;
